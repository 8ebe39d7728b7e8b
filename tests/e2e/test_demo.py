"""``geoportal demo`` end to end: a real WPS server, five real jobs, results in the storage."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from typer.testing import CliRunner

from geoportal.cli import app

STEPS = ("extract samples", "balance samples", "train", "infer", "assess")


def scratch_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPORTAL_")}
    env.update(
        GEOPORTAL_STORAGE=str(tmp_path / "storage"),
        GEOPORTAL_STATE_DIR=str(tmp_path / "state"),
        GEOPORTAL_USER="alice",
    )
    return env


@pytest.mark.slow
def test_demo_runs_the_loop_through_the_wps_on_a_generated_scene(tmp_path: Path) -> None:
    env = scratch_env(tmp_path)
    script = Path(sys.executable).parent / "geoportal"
    done = subprocess.run(
        [str(script), "demo", "--epochs", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "NO REAL DATA" in out and "GENERATED" in out
    for name in STEPS:
        assert re.search(rf"^✔ {name}: \d+\.\d s", out, re.M), name
        assert re.search(rf"^  {name}\s+\d+\.\d s$", out, re.M), name
    # Asynchronous jobs: the status document was polled before each job finished.
    assert len(re.findall(r"^    \[  0\.0%\] PyWPS Process \S+ accepted$", out, re.M)) == 5, out
    acc = re.search(r"^Overall ACC (\d\.\d+)", out, re.M)
    assert acc and float(acc.group(1)) > 0.8, out

    # The results are left in alice's area under the printed storage paths.
    storage = tmp_path / "storage"
    printed = dict(re.findall(r"^  ([a-z-]+\.[a-z]+)\s+(users/alice/\S+)$", out, re.M))
    for key in ("extract-samples.samples", "balanced-sampling.selection", "train-model.model",
                "run-inference.classification", "assess-accuracy.report",
                "assess-accuracy.html"):  # fmt: skip
        assert key in printed, out
        assert (storage / printed[key]).exists(), printed[key]
    with rasterio.open(storage / printed["run-inference.classification"]) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert "GEOPORTAL_CLASSES" in ds.tags()
    report = json.loads((storage / printed["assess-accuracy.report"]).read_text())
    assert abs(report["overall"]["Overall ACC"] - float(acc.group(1))) < 1e-3
    assert f"show_classification('{printed['run-inference.classification']}')" in out

    # The temporary WPS server is gone with the command.
    port = int(re.search(r"WPS service: http://127\.0\.0\.1:(\d+)/wps", out).group(1))
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))


def test_demo_refuses_partial_inputs_before_starting_anything(tmp_path: Path) -> None:
    env = scratch_env(tmp_path)
    result = CliRunner().invoke(app, ["demo", "--scene", "datasets/x.tif"], env=env)
    assert result.exit_code == 2
    assert "--labels" in result.output and "--class-field" in result.output
    assert not (tmp_path / "state" / "demo").exists()


def test_demo_names_a_missing_scene(tmp_path: Path) -> None:
    env = scratch_env(tmp_path)
    result = CliRunner().invoke(
        app, ["demo", "--scene", str(tmp_path / "nope.tif"), "--labels", "l.gpkg",
              "--class-field", "id"], env=env,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "[scene]" in result.output and "nope.tif" in result.output
