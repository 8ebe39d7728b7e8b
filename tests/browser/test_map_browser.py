"""The labeling map in a really served notebook (Voila), driven by headless Chromium.

A scratch storage holds the NC Landsat scene; the tile service runs on
loopback for alice; Voila serves a small notebook that builds a
``LabelingMap``. The tests draw, edit, delete and save through Leaflet.draw's
own toolbar, then read the GeoPackage on disk, and finally load it back.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import geopandas as gpd
import nbformat
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCENE = "datasets/lsat7_2000_6band.tif"
LABELSET = "browser"
NOTEBOOK = f"""
from geoportal.mapping import LabelingMap
lmap = LabelingMap({SCENE!r}, {{1: "forest", 2: "water", 3: "urban"}}, labelset={LABELSET!r},
                   autosave_seconds=1.0)
lmap
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}) for {url}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def served(tmp_path_factory, nc_scene):
    """(voila URL, storage root): tile service + Voila on loopback, stopped afterwards."""
    from geoportal.storage import Storage

    base = tmp_path_factory.mktemp("mapbrowser")
    storage = Storage(base / "storage")
    storage.ensure_layout("alice")
    shutil.copy(nc_scene, storage.root / SCENE)
    work = base / "work"
    work.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK)]
    nbformat.write(nb, work / "labeling.ipynb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOPORTAL_", "JUPYTERHUB_"))}
    tile_port, voila_port = _free_port(), _free_port()
    env.update(
        GEOPORTAL_STORAGE=str(storage.root),
        GEOPORTAL_USER="alice",
        GEOPORTAL_OFFLINE="1",
        GEOPORTAL_TILES_URL=f"http://127.0.0.1:{tile_port}",
        PYTHONPATH=str(REPO),
    )
    logs = base / "logs"
    logs.mkdir()
    tiles_log = open(logs / "tiles.log", "w")  # noqa: SIM115 (closed in the teardown)
    voila_log = open(logs / "voila.log", "w")  # noqa: SIM115
    tiles = subprocess.Popen(
        [sys.executable, "-m", "geoportal_hub.tileservice", "--port", str(tile_port)],
        env=env, cwd=work, stdout=tiles_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    voila = subprocess.Popen(
        [sys.executable, "-m", "voila", "labeling.ipynb", "--no-browser",
         f"--port={voila_port}", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
        env=env, cwd=work, stdout=voila_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{tile_port}/health", tiles)
        _wait_http(f"http://127.0.0.1:{voila_port}/", voila, timeout=120)
        yield f"http://127.0.0.1:{voila_port}/", storage.root
    finally:
        _stop(voila)
        _stop(tiles)
        tiles_log.close()
        voila_log.close()
        for name in ("tiles.log", "voila.log"):
            print(name, (logs / name).read_text()[-3000:])


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{e} @ {str(e.stack)[:1500]}"))
    page.goto(url, timeout=120_000)
    page.wait_for_selector(".leaflet-container", timeout=120_000)
    page.wait_for_function(
        "document.querySelectorAll('img.leaflet-tile-loaded').length >= 4 && "
        "document.querySelectorAll('img.leaflet-tile:not(.leaflet-tile-loaded)').length == 0",
        timeout=60_000,
    )
    page.wait_for_timeout(800)
    return page, errors


def _labels(root: Path) -> gpd.GeoDataFrame | None:
    path = root / "users/alice/labels" / f"{LABELSET}.gpkg"
    if not path.exists():
        return None
    return gpd.read_file(path, layer=LABELSET)


def _wait_labels(root: Path, predicate, timeout: float = 30) -> gpd.GeoDataFrame:
    deadline = time.monotonic() + timeout
    frame = None
    while time.monotonic() < deadline:
        try:
            frame = _labels(root)
        except Exception:  # a save may be renaming the file right now
            frame = None
        if frame is not None and predicate(frame):
            return frame
        time.sleep(0.3)
    raise AssertionError(f"labels on disk never matched; last seen:\n{frame}")


def _click_seq(page, points, pause: int = 250) -> None:
    for x, y in points:
        page.mouse.click(x, y)
        page.wait_for_timeout(pause)


def _pick_class(page, name: str) -> None:
    page.locator(".geoportal-labeling-map button.widget-toggle-button", has_text=name).click()
    page.wait_for_timeout(300)


def _action(page, text: str) -> None:
    page.locator(".leaflet-draw-actions a:visible", has_text=text).first.click()
    page.wait_for_timeout(1500)  # let the kernel's answer reach the browser, as a person would


def test_draw_edit_delete_save(served, browser, artifacts) -> None:
    url, root = served
    page, errors = _open(browser, url)
    box = page.locator(".leaflet-container").bounding_box()
    page.screenshot(path=str(artifacts / "map_scene.png"))
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    area = shot[y0 + 60 : y0 + int(box["height"]) - 60, x0 + 60 : x0 + int(box["width"]) - 60]
    background = np.abs(area - np.array([221, 221, 221])).sum(axis=-1) > 12
    assert background.mean() > 0.3, "the scene's tiles do not show on the map"
    assert len(np.unique(area.reshape(-1, 3), axis=0)) > 1000

    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # Forest: a triangle left of the centre.
    _pick_class(page, "forest")
    page.locator("a.leaflet-draw-draw-polygon").click()
    forest = [(cx - 200, cy - 80), (cx - 80, cy - 80), (cx - 140, cy + 20)]
    _click_seq(page, forest)
    _click_seq(page, [forest[0]])  # closing on the first vertex finishes the polygon
    # Water: a square right of the centre.
    _pick_class(page, "water")
    page.locator("a.leaflet-draw-draw-polygon").click()
    water = [(cx + 80, cy - 80), (cx + 180, cy - 80), (cx + 180, cy + 20), (cx + 80, cy + 20)]
    _click_seq(page, water)
    _click_seq(page, [water[0]])
    # Urban: a point below the centre.
    _pick_class(page, "urban")
    page.locator("a.leaflet-draw-draw-marker").click()
    _click_seq(page, [(cx, cy + 150)])
    page.locator(".geoportal-labeling-map button", has_text="Save").first.click()
    drawn = _wait_labels(root, lambda f: len(f) == 3)
    assert sorted(zip(drawn["label"], drawn.geom_type, strict=True)) == [
        ("forest", "Polygon"), ("urban", "Point"), ("water", "Polygon"),
    ]  # fmt: skip
    forest_area = float(drawn[drawn["label"] == "forest"].area.iloc[0])
    page.screenshot(path=str(artifacts / "map_drawn.png"))

    # Edit: drag the forest triangle's top-left vertex further out.
    page.locator("a.leaflet-draw-edit-edit").click()
    page.wait_for_timeout(500)
    handles = page.locator(".leaflet-editing-icon")
    target = None
    for i in range(handles.count()):
        b = handles.nth(i).bounding_box()
        hx, hy = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2
        if abs(hx - forest[0][0]) < 6 and abs(hy - forest[0][1]) < 6:
            target = (hx, hy)
    assert target is not None, "no vertex handle at the forest polygon's corner"
    page.mouse.move(*target)
    page.mouse.down()
    page.mouse.move(target[0] - 40, target[1] - 40, steps=8)
    page.mouse.move(target[0] - 80, target[1] - 80, steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)
    _action(page, "Save")
    # Delete: the water square.
    page.locator("a.leaflet-draw-edit-remove").click()
    page.wait_for_timeout(400)
    page.mouse.click(cx + 130, cy - 30)
    page.wait_for_timeout(300)
    _action(page, "Save")
    page.locator(".geoportal-labeling-map button", has_text="Save").first.click()
    final = _wait_labels(root, lambda f: len(f) == 2)
    page.screenshot(path=str(artifacts / "map_edited.png"))
    page.close()

    assert sorted(zip(final["class"], final["label"], final.geom_type, strict=True)) == [
        (1, "forest", "Polygon"), (3, "urban", "Point"),
    ]  # fmt: skip
    assert set(final["author"]) == {"alice"}
    assert final.crs.to_epsg() == 32119  # saved in the scene's CRS
    edited_area = float(final[final["label"] == "forest"].area.iloc[0])
    assert edited_area > forest_area * 1.3, (forest_area, edited_area)
    # Earlier saves are kept as versions.
    assert list((root / "users/alice/labels/.versions" / LABELSET).glob("*.gpkg"))
    assert not errors, "\n".join(errors)


def test_saved_labels_are_drawn_again(served, browser, artifacts) -> None:
    url, root = served
    saved = _labels(root)
    if saved is None or len(saved) != 2:
        pytest.skip("needs the labels saved by test_draw_edit_delete_save")
    page, errors = _open(browser, url)  # a fresh kernel loads the labelset from disk
    page.wait_for_selector("path.leaflet-interactive", timeout=30_000)
    page.wait_for_timeout(500)
    polygons = page.locator(".leaflet-overlay-pane path.leaflet-interactive").count()
    markers = page.locator(".leaflet-marker-pane .leaflet-marker-icon").count()
    stats = page.locator(".geoportal-stats").inner_text()
    page.screenshot(path=str(artifacts / "map_reloaded.png"))
    page.close()
    # The forest polygon and the urban point's class-coloured dot (no marker icons).
    assert polygons == 2 and markers == 0, (polygons, markers)
    rows = {line.split()[0]: line.split()[1] for line in stats.splitlines()[1:] if line.strip()}
    assert rows == {"forest": "1", "water": "0", "urban": "1"}, stats
    assert not errors, "\n".join(errors)
