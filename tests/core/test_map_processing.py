"""Processing from the labeling map through the real WPS service (OWSLib, async).

The map calls extract-samples, run-inference and assess-accuracy under the
public contract, as a GIS client would; the classification comes back as a
layer with its legend.
"""

from __future__ import annotations

import shutil
import socket
import threading

import pytest

pytestmark = pytest.mark.slow


def _rect(x: float, y: float, d: float = 0.004) -> dict:
    ring = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]
    return {"type": "Feature", "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}  # fmt: skip


@pytest.fixture
def wps_url(settings, nc_scene):
    from werkzeug.serving import make_server

    from wps_processes.app import LocalAuth, create_app

    root = settings.storage_root
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(nc_scene, root / "datasets/lsat7_2000_6band.tif")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.wps.public_url = f"http://127.0.0.1:{port}"
    app = create_app(settings, auth=LocalAuth("alice"))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/wps"
    server.shutdown()
    thread.join(10)


def test_extract_infer_assess_from_the_map(settings, wps_url) -> None:
    from geoportal.mapping import LabelingMap
    from geoportal.storage import storage_from_settings
    from tests.core.test_inference import make_checkpoint

    storage = storage_from_settings(settings)
    storage.ensure_layout("alice")
    root = storage.root
    make_checkpoint(
        root / "users/alice/models/run1/best.pt", root / "datasets/lsat7_2000_6band.tif",
        "unet", "segmentation", k=2, base_channels=4, depth=2,
    )  # fmt: skip
    lmap = LabelingMap(
        "datasets/lsat7_2000_6band.tif", {1: "forest", 2: "water"}, labelset="wps",
        user="alice", storage=storage, tile_url="http://127.0.0.1:9", wps_url=wps_url,
        basemap=False, autosave_seconds=0,
    )  # fmt: skip
    for code, (x, y) in ((1, (-78.70, 35.74)), (2, (-78.66, 35.72))):
        lmap.active_class = code
        message = {"event": "draw:created", "geo_json": _rect(x, y)}
        lmap.draw._handle_leaflet_event(None, message, None)
    seen: list[float] = []
    report = lmap._progress

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        report(fraction, message)

    lmap._progress = progress  # type: ignore[method-assign]

    samples = lmap.extract_samples()
    assert samples.outputs["samples"].startswith("http://127.0.0.1:")
    assert (root / "users/alice/labels/wps.gpkg").exists()  # saved before the call
    assert seen and seen[-1] == 1.0 and lmap.progress_bar.value == 1.0

    inference = lmap.run_inference("users/alice/models/run1")
    assert inference.outputs["classification"].endswith("classification.tif")
    assert lmap.classification is not None and lmap.classification.startswith("users/alice/runs/")
    assert lmap.classification_layer in lmap.map.layers
    assert "scene=users/alice/runs/" in lmap.classification_layer.url
    assert len(lmap.classification_legend.legend) == 2

    accuracy = lmap.assess_accuracy()
    assert set(accuracy.outputs) >= {"report", "html", "plot"}
    assert "Overall" in lmap.accuracy_summary or "ACC" in lmap.accuracy_summary
