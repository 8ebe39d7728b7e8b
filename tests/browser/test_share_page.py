"""The shareable static page renders in Chromium with no network at all."""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geoportal.classes import classes_to_json, make_classes

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
NAMES = {1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest",
         6: "water", 7: "sediment"}  # fmt: skip


@pytest.fixture
def shared_storage(storage, nc_scene, nc_labels):
    shutil.copy(nc_scene, storage.root / "datasets/lsat7_2000_6band.tif")
    (storage.root / "datasets/labels").mkdir()
    gpd.read_file(nc_labels / "landsat96_polygons.shp").to_file(
        storage.root / "datasets/labels/landsat96_polygons.gpkg", layer="landsat96_polygons"
    )
    # A classification raster in the platform's layout, from the real labelled pixels.
    classes = make_classes(NAMES)
    with rasterio.open(nc_labels / "landsat96_labelled_pixels.tif") as src:
        data = src.read(1)
        profile = src.profile
    codes = np.where(np.isfinite(data) & (data > 0), data, 255).astype("uint8")
    profile.update(dtype="uint8", nodata=255, count=1)
    out = storage.root / "users/alice/runs/job1/classification.tif"
    out.parent.mkdir(parents=True)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.write_colormap(1, {c.code: (*c.rgb, 255) for c in classes})
        dst.update_tags(GEOPORTAL_CLASSES=json.dumps(classes_to_json(classes)))
    return storage


def test_share_page_offline(shared_storage, artifacts, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    from geoportal.mapping.share import share_page
    from geoportal.tiles import TileStyle

    page_path = share_page(
        "datasets/lsat7_2000_6band.tif",
        tmp_path / "share.html",
        user="alice",
        storage=shared_storage,
        labels="datasets/labels/landsat96_polygons.gpkg",
        class_field="id",
        classification="users/alice/runs/job1/classification.tif",
        style=TileStyle(bands=(4, 3, 2)),
    )
    text = page_path.read_text()
    assert "cdn.jsdelivr" not in text and "code.jquery" not in text
    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})

            def route(r):  # only the file itself and inline data may load
                if r.request.url.startswith(("file://", "data:")):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_selector(".leaflet-image-layer", state="attached", timeout=20_000)
            page.wait_for_function(
                "Array.from(document.querySelectorAll('img.leaflet-image-layer'))"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=20_000,
            )
            page.wait_for_timeout(500)
            n_images = page.locator("img.leaflet-image-layer").count()
            n_paths = page.locator("path.leaflet-interactive").count()
            legend = page.locator("#geoportal-legend").inner_text()
            shot = page.screenshot(path=str(artifacts / "share_page_offline.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert blocked == []
    assert n_images == 2  # the scene and the classification
    assert n_paths == 34  # every label polygon is drawn
    for name in ("labels", "classification", "forest", "water", "sediment"):
        assert name in legend
    from io import BytesIO

    from PIL import Image

    img = np.asarray(Image.open(BytesIO(shot)).convert("RGB")).astype(int)
    centre = img[250:550, 300:700]
    # The map centre shows the scene (many colours), not a blank grey background.
    assert len(np.unique(centre.reshape(-1, 3), axis=0)) > 500
