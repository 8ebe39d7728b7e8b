"""Fixtures every test area shares: real data, a scratch storage, settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GEOPORTAL_SHARED_DATA", REPO.parent / "shared" / "data"))
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real scenes and labels (see its README)."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.fail(
            f"real test data missing: expected {SHARED_DATA} (../shared/data beside the repo)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def nc_scene(shared_data: Path) -> Path:
    return shared_data / "nc_landsat7" / "lsat7_2000_6band.tif"


@pytest.fixture(scope="session")
def nc_labels(shared_data: Path) -> Path:
    return shared_data / "nc_landsat7" / "labels"


@pytest.fixture(scope="session")
def s2_scene(shared_data: Path) -> Path:
    return shared_data / "sentinel2_l1c_18SVG" / "S2_L1C_T18SVG_20160112_20m_6band.tif"


@pytest.fixture(scope="session")
def rgb_scene(shared_data: Path) -> Path:
    return shared_data / "landsat7_rgb" / "RGB.byte.tif"


@pytest.fixture
def storage(tmp_path: Path):
    """A fresh storage root with the areas of users alice and bob."""
    from geoportal.storage import Storage

    store = Storage(tmp_path / "storage", url_prefixes=("http://127.0.0.1:5000/outputs",))
    store.ensure_layout("alice")
    store.ensure_layout("bob")
    return store


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing at a scratch storage and state folder."""
    from geoportal.settings import load_settings

    for key in list(os.environ):
        if key.startswith("GEOPORTAL_") and key != "GEOPORTAL_SHARED_DATA":
            monkeypatch.delenv(key)
    return load_settings(storage_root=str(tmp_path / "storage"), state_dir=str(tmp_path / "state"))


@pytest.fixture
def artifacts() -> Path:
    """A folder kept after the run for screenshots and plots people should look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
