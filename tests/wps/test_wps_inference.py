"""run-inference through the WPS app in-process (pywps.tests.client_for): sync and async."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import numpy as np
import pytest
import rasterio
from pywps.tests import client_for

from tests.core.test_inference import make_checkpoint
from tests.wps.server import TOKENS, build_app

ALICE = {"Authorization": f"token {TOKENS['alice']}"}
HOST = "http://127.0.0.1:5999"
SCENE = "datasets/lsat7_2000_6band.tif"


def execute_url(asynchronous: bool = False, **inputs: object) -> str:
    data = ";".join(f"{k}={quote(str(v), safe='/:')}" for k, v in inputs.items())
    url = (
        "/wps?service=WPS&version=1.0.0&request=Execute&identifier=run-inference"
        f"&DataInputs={data}&ResponseDocument=classification@asReference=true;"
        "stats@asReference=true"
    )
    if asynchronous:
        url += "&storeExecuteResponse=true&status=true"
    return url


def references(resp) -> dict[str, str]:
    ids = [e.text for e in resp.xpath("//wps:Output/ows:Identifier")]
    return dict(zip(ids, resp.xpath("//wps:Output/wps:Reference/@href"), strict=True))


@pytest.fixture
def client(app_settings):
    return client_for(build_app(app_settings))


@pytest.fixture
def models(app_settings) -> dict[str, str]:
    root = app_settings.storage_root
    scene = root / SCENE
    unet = make_checkpoint(
        root / "users/alice/models/run1/best.pt",
        scene,
        "unet",
        "segmentation",
        k=7,
        base_channels=4,
        depth=2,
    )
    rgb = make_checkpoint(
        root / "users/alice/models/rgb.pt",
        root / "datasets/RGB.byte.tif",
        "unet",
        "segmentation",
        k=3,
        base_channels=4,
        depth=1,
    )
    return {"run": str(unet.parent.relative_to(root)), "rgb": str(rgb.relative_to(root))}


def test_sync_writes_cog_and_stats(client, app_settings, models):
    resp = client.get(
        execute_url(raster=SCENE, model=models["run"], tile_size=128, probabilities="confidence"),
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    refs = references(resp)
    assert set(refs) == {"classification", "stats"}
    root = app_settings.storage_root
    out = root / refs["classification"].split("/outputs/", 1)[1]
    assert out.parent.parent.name == "runs" and out.name == "classification.tif"
    with rasterio.open(out) as ds, rasterio.open(root / SCENE) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
        classes = ds.read(1)
    assert set(np.unique(classes)) <= set(range(1, 8)) | {255}
    stats = json.loads(client.get(refs["stats"][len(HOST) :], headers=ALICE).get_data())
    assert stats["pixels"] == 489 * 443 and stats["km2_per_s"] > 0
    assert stats["stages"]["forward"] > 0
    assert (out.parent / "classification_confidence.tif").exists()


def test_async_progress_counts_tiles(client, models):
    resp = client.get(
        execute_url(True, raster=SCENE, model=models["run"], tile_size=64, batch_size=1),
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    location = resp.xpath("/wps:ExecuteResponse/@statusLocation")[0]
    deadline = time.monotonic() + 40
    seen = []
    while True:
        text = client.get(location[len(HOST) :], headers=ALICE).get_data(as_text=True)
        seen.append(text)
        if "ProcessSucceeded" in text or "ProcessFailed" in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert "ProcessSucceeded" in text, text
    assert any("/56 tiles" in t for t in seen), seen[-3:]  # 8 × 7 tiles of 64 px
    assert set(references_from_text(client, text)) == {"classification", "stats"}


def references_from_text(client, text: str) -> list[str]:
    import re

    return re.findall(r"<ows:Identifier>(classification|stats)</ows:Identifier>", text)


def test_wrong_bands_is_an_invalid_parameter(client, app_settings, models):
    resp = client.get(execute_url(raster=SCENE, model=models["rgb"]), headers=ALICE)
    code = resp.xpath("/ows:ExceptionReport/ows:Exception/@exceptionCode")[0]
    locator = resp.xpath("/ows:ExceptionReport/ows:Exception/@locator")[0]
    text = resp.xpath_text("/ows:ExceptionReport/ows:Exception/ows:ExceptionText")
    assert (code, locator) == ("InvalidParameterValue", "model")
    assert "expects 3 bands" in text and "has 6" in text
    runs = app_settings.storage_root / "users/alice/runs"
    assert not list(runs.rglob("*.tif"))
