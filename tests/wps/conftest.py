"""Fixtures of the WPS tests: a standard test storage, in-process apps, real servers."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pywps.tests  # noqa: F401 - imported here so that its side effect is undone below

# pywps.tests calls logging.disable(CRITICAL) on import, which would silence every log
# record (and caplog) for the rest of the session.
logging.disable(logging.NOTSET)

from geoportal.services import free_port  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.wps.server import TOKENS  # noqa: E402


def build_test_storage(root: Path, shared_data: Path) -> Path:
    """The standard test storage (the layout notebooks and example_inputs rely on)."""
    datasets = root / "datasets"
    (datasets / "labels").mkdir(parents=True, exist_ok=True)
    for src in (
        shared_data / "nc_landsat7" / "lsat7_2000_6band.tif",
        shared_data / "sentinel2_l1c_18SVG" / "S2_L1C_T18SVG_20160112_20m_6band.tif",
        shared_data / "landsat7_rgb" / "RGB.byte.tif",
    ):
        shutil.copyfile(src, datasets / src.name)
    import geopandas as gpd

    for name in ("landsat96_polygons", "landsat96_points"):
        frame = gpd.read_file(shared_data / "nc_landsat7" / "labels" / f"{name}.shp")
        frame.to_file(datasets / "labels" / f"{name}.gpkg", driver="GPKG")
    for user in TOKENS:
        for sub in ("labels", "samples", "models", "runs"):
            (root / "users" / user / sub).mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def test_storage_template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return build_test_storage(tmp_path_factory.mktemp("wps-template") / "storage", shared_data)


@pytest.fixture
def wps_dirs(tmp_path: Path, test_storage_template: Path) -> tuple[Path, Path]:
    """(storage root, state dir) for one server, with a fresh copy of the test storage."""
    storage = tmp_path / "storage"
    shutil.copytree(test_storage_template, storage)
    return storage, tmp_path / "state"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPORTAL_")}
    if "GEOPORTAL_SHARED_DATA" in os.environ:
        env["GEOPORTAL_SHARED_DATA"] = os.environ["GEOPORTAL_SHARED_DATA"]
    return env


class WpsServer:
    """A real WPS server in a subprocess (its own process group) on 127.0.0.1."""

    def __init__(self, storage: Path, state: Path, log: Path, **settings: str) -> None:
        self.storage, self.state, self.log = storage, state, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/wps"
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WpsServer:
        import requests

        env = (
            clean_env()
            | {
                "GEOPORTAL_STORAGE": str(self.storage),
                "GEOPORTAL_STATE_DIR": str(self.state),
                "GEOPORTAL_WPS__PORT": str(self.port),
                "GEOPORTAL_SMALL": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "platform")]),
            }
            | {f"GEOPORTAL_WPS__{k.upper()}": v for k, v in self.settings.items()}
        )
        handle = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.wps.server"],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"WPS server exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"WPS server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Kill the server and every job process it forked (the restart test's crash)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def headers(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"token {TOKENS[user]}"}


@pytest.fixture(scope="module")
def wps_server(
    tmp_path_factory: pytest.TempPathFactory, test_storage_template: Path
) -> Iterator[WpsServer]:
    """One real server for a test module (parallelprocesses=2, maxprocesses=64)."""
    base = tmp_path_factory.mktemp("wps-server")
    storage = base / "storage"
    shutil.copytree(test_storage_template, storage)
    server = WpsServer(storage, base / "state", base / "server.log").start()
    yield server
    server.stop()


@pytest.fixture
def app_settings(wps_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    from geoportal.settings import load_settings

    for key in list(os.environ):
        if key.startswith("GEOPORTAL_") and key != "GEOPORTAL_SHARED_DATA":
            monkeypatch.delenv(key)
    storage, state = wps_dirs
    return load_settings(
        storage_root=str(storage), state_dir=str(state), wps={"port": 5999, "log_level": "WARNING"}
    )
