"""assess-accuracy through the WPS app in-process (pywps.tests.client_for): sync and async."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from affine import Affine
from pywps.tests import client_for

from geoportal.classes import make_classes
from tests.core.test_accuracy import NC, NC_NAMES, write_classification
from tests.wps.server import TOKENS, build_app

ALICE = {"Authorization": f"token {TOKENS['alice']}"}
HOST = "http://127.0.0.1:5999"
OUTPUTS = ("report", "html", "plot")


def execute_url(asynchronous: bool = False, **inputs: object) -> str:
    data = ";".join(f"{k}={quote(str(v), safe='/:')}" for k, v in inputs.items())
    url = (
        "/wps?service=WPS&version=1.0.0&request=Execute&identifier=assess-accuracy"
        f"&DataInputs={data}&ResponseDocument=" + ";".join(f"{o}@asReference=true" for o in OUTPUTS)
    )
    if asynchronous:
        url += "&storeExecuteResponse=true&status=true"
    return url


def references(resp) -> dict[str, str]:
    ids = [e.text for e in resp.xpath("//wps:Output/ows:Identifier")]
    return dict(zip(ids, resp.xpath("//wps:Output/wps:Reference/@href"), strict=True))


@pytest.fixture(scope="module")
def nc(nc_scene: Path, nc_labels: Path) -> NC:
    return NC(nc_scene, nc_labels)


@pytest.fixture
def client(app_settings):
    return client_for(build_app(app_settings))


@pytest.fixture
def rasters(app_settings, nc: NC) -> dict[str, str]:
    """Two versions and a renamed one in alice's area (storage-relative paths)."""
    root = app_settings.storage_root
    made = {
        "good": nc.write(root / "users/alice/labels/good.tif", nc.with_errors(0.05, seed=1)),
        "worse": nc.write(root / "users/alice/labels/worse.tif", nc.with_errors(0.25, seed=2)),
        "renamed": nc.write(
            root / "users/alice/labels/renamed.tif", nc.truthy,
            classes=make_classes({c: f"type {c}" for c in range(1, 8)}),
        ),
        "coarse": write_classification(
            root / "users/alice/labels/coarse.tif", nc.labels[::2, ::2], crs=nc.crs,
            transform=nc.transform @ Affine.scale(2), classes=None, nodata=0,
        ),
    }  # fmt: skip
    return {k: str(v.relative_to(root)) for k, v in made.items()}


def _summary(doc) -> str:
    return doc.xpath_text("//wps:Status/wps:ProcessSucceeded")


def test_sync_with_baseline(client, app_settings, rasters):
    resp = client.get(
        execute_url(
            classification=rasters["good"], reference="datasets/labels/landsat96_polygons.gpkg",
            class_field="id", baseline=rasters["worse"],
        ),
        headers=ALICE,
    )  # fmt: skip
    assert resp.status_code == 200, resp.get_data(as_text=True)
    refs = references(resp)
    assert set(refs) == set(OUTPUTS)
    summary = _summary(resp)
    assert summary.startswith("Overall ACC ") and "labelled pixels" in summary
    assert "; baseline 0." in summary
    assert summary.endswith("the new version is better by " + summary.rsplit("by ", 1)[1])
    report = json.loads(client.get(refs["report"][len(HOST) :], headers=ALICE).get_data())
    assert report["comparison"]["better"] == "new version"
    assert report["summary"] == summary
    assert report["overall"]["Overall ACC"] > 0.85 and "PPV" in report["class"]
    assert report["inputs"]["classification"] == "good.tif"
    run = app_settings.storage_root / refs["report"].split("/outputs/", 1)[1]
    assert (run.parent / "report.html").read_text().count("Overall ACC") >= 1
    assert (run.parent / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_async_reports_progress_and_ends_with_the_summary(client, rasters):
    resp = client.get(
        execute_url(
            True, classification=rasters["good"],
            reference="datasets/labels/landsat96_points.gpkg", class_field="label",
        ),
        headers=ALICE,
    )  # fmt: skip
    assert resp.status_code == 200, resp.get_data(as_text=True)
    location = resp.xpath("/wps:ExecuteResponse/@statusLocation")[0]
    deadline = time.monotonic() + 120
    while True:
        status = client.get(location[len(HOST) :], headers=ALICE)
        text = status.get_data(as_text=True)
        if "ProcessSucceeded" in text or "ProcessFailed" in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert "ProcessSucceeded" in text, text
    assert "Overall ACC" in text and "labelled pixels" in text
    assert set(references(status)) == set(OUTPUTS)


def test_bad_inputs_become_exception_reports_and_leave_nothing(client, app_settings, rasters):
    def exception(**inputs):
        resp = client.get(execute_url(**inputs), headers=ALICE)
        code = resp.xpath("/ows:ExceptionReport/ows:Exception/@exceptionCode")[0]
        locator = resp.xpath("/ows:ExceptionReport/ows:Exception/@locator")[0]
        text = resp.xpath_text("/ows:ExceptionReport/ows:Exception/ows:ExceptionText")
        return code, locator, text

    points = "datasets/labels/landsat96_points.gpkg"
    code, locator, text = exception(classification=rasters["renamed"], reference=points,
                                    class_field="label")  # fmt: skip
    assert (code, locator) == ("InvalidParameterValue", "mapping") and "mapping" in text
    code, locator, text = exception(classification=rasters["good"], reference=rasters["coarse"])
    assert (code, locator) == ("InvalidParameterValue", "reference") and "resample" in text
    code, locator, _ = exception(classification=rasters["good"], reference=points)
    assert (code, locator) == ("MissingParameterValue", "class_field")
    code, locator, _ = exception(classification=rasters["good"], reference=points,
                                 class_field="label", mapping="{oops")  # fmt: skip
    assert (code, locator) == ("InvalidParameterValue", "mapping")
    runs = app_settings.storage_root / "users" / "alice" / "runs"
    written = [p.name for p in runs.rglob("*") if p.suffix in (".json", ".html", ".png")]
    assert [n for n in written if n != "job.json"] == []

    # The same renamed classes with a mapping succeed.
    mapping = json.dumps({f"type {code}": name for code, name in NC_NAMES.items()})
    resp = client.get(execute_url(classification=rasters["renamed"], reference=points,
                                  class_field="label", mapping=mapping), headers=ALICE)  # fmt: skip
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert _summary(resp).startswith("Overall ACC ")
