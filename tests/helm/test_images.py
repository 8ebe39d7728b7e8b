"""The images: hadolint finds nothing, and the lock files pin what the project needs."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helm.conftest import REPO

HADOLINT = REPO / ".venv" / "bin" / "hadolint"
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))
REQUIREMENTS = REPO / "images" / "requirements"


def hadolint(path: Path) -> list[dict]:
    # --disable-ignore-pragma: an inline "hadolint ignore" may not hide a finding
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--disable-ignore-pragma", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout or "[]")


def test_there_are_notebook_service_and_hub_images() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["hub", "notebook", "service"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    assert hadolint(dockerfile) == []


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3006", "DL3013"} <= codes


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_are_non_root_with_a_healthcheck_and_no_secrets(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK ", text, flags=re.M)
    assert not re.search(r"(?i)(password|secret|token)\s*=", text)


def test_notebook_variants_share_everything_but_torch() -> None:
    text = (REPO / "images" / "notebook" / "Dockerfile").read_text()
    assert "FROM base AS cpu" in text and "FROM base AS cuda" in text
    assert "FROM ${VARIANT} AS notebook" in text
    # the library, kernel, JupyterLab and maps come from the one lock, after the variant
    final = text.split("FROM ${VARIANT} AS notebook", 1)[1]
    assert "geoportal.lock" in final and "ipykernel install" in final
    cpu = (REQUIREMENTS / "torch-cpu.txt").read_text()
    cuda = (REQUIREMENTS / "torch-cuda.txt").read_text()
    assert "torch==2.13.0+cpu" in cpu and "whl/cpu" in cpu
    assert re.search(r"torch==2\.13\.0\+cu\d+", cuda)


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REQUIREMENTS / name).read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not pinned with =="
            pins[package] = version
    return pins


def test_lock_satisfies_every_project_dependency() -> None:
    pins = _pins("geoportal.lock")
    assert "torch" not in pins  # per variant, from torch-cpu.txt / torch-cuda.txt
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    missing = []
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = requirement.name.lower().replace("_", "-")
        if name == "torch":
            continue
        version = pins.get(name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{spec} (lock: {version})")
    assert not missing, f"regenerate with images/requirements/generate_locks.py: {missing}"
    for needed in (
        "jupyterlab",
        "ipykernel",
        "ipyleaflet",
        "jupyter-leaflet",
        "dask",
        "distributed",
        "dask-gateway",
        "jupyterhub",
    ):
        assert needed in pins


def test_hub_lock_covers_the_hub_package() -> None:
    pins = _pins("hub.lock")
    assert {"pydantic", "pydantic-core"} <= set(pins)
