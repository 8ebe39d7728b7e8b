"""Every tutorial notebook runs top to bottom on the embedded default.

The notebooks get a scratch storage holding the real scenes and labels from
``../shared/data`` (added with ``geoportal datasets add``, as an administrator
would), ``GEOPORTAL_SMALL=1`` for small settings, and — for the WPS tutorial — a
real standalone WPS server on loopback. Executed copies are kept in
``test-artifacts/notebooks/`` so a person can read them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
GEOPORTAL = str(Path(sys.executable).with_name("geoportal"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    root = tmp_path_factory.mktemp("nb")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GEOPORTAL_", "JUPYTERHUB_"))
    }
    env.update(
        GEOPORTAL_STORAGE=str(root / "storage"),
        GEOPORTAL_STATE_DIR=str(root / "state"),
        GEOPORTAL_USER="alice",
        GEOPORTAL_SMALL="1",
        GEOPORTAL_DEVICE="cpu",
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    scenes = [
        shared_data / "nc_landsat7" / "lsat7_2000_6band.tif",
        shared_data / "sentinel2_l1c_18SVG" / "S2_L1C_T18SVG_20160112_20m_6band.tif",
        shared_data / "landsat7_rgb" / "RGB.byte.tif",
    ]
    run = {"env": env, "check": True, "capture_output": True, "text": True, "timeout": 300}
    subprocess.run([GEOPORTAL, "datasets", "add", *map(str, scenes)], **run)
    for name in ("landsat96_polygons.shp", "landsat96_points.shp"):
        labels = shared_data / "nc_landsat7" / "labels" / name
        subprocess.run([GEOPORTAL, "datasets", "add-labels", str(labels), "--class-field", "id"], **run)
    return root, env


@pytest.fixture(scope="module")
def wps_server(notebook_env):
    from tests.servers import free_port, wait_for_http

    root, env = notebook_env
    port = free_port()
    log = open(root / "wps.log", "w")
    proc = subprocess.Popen(
        [GEOPORTAL, "wps", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/wps"
    try:
        wait_for_http(url + "?service=WPS&request=GetCapabilities", timeout=60, process=proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, notebook_env, request: pytest.FixtureRequest, artifacts: Path):
    root, env = notebook_env
    env = dict(env)
    if "wps" in path.stem:
        env["GEOPORTAL_WPS_URL"] = request.getfixturevalue("wps_server")
    workdir = root / "work" / path.stem
    workdir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(path, as_version=4)
    assert all(
        not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"
    ), f"{path.name} has outputs committed: strip them"
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        )
        try:
            client.execute()
        finally:
            out = artifacts / "notebooks"
            out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out / path.name)
    finally:
        os.environ.clear()
        os.environ.update(saved)
