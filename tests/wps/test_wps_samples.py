"""extract-samples and balanced-sampling through the WPS: in-process sync, real-server async."""

from __future__ import annotations

import csv
import json
import time
from urllib.parse import quote

import pytest
import requests
from pywps.tests import client_for

from tests.wps.server import TOKENS, build_app

ALICE = {"Authorization": f"token {TOKENS['alice']}"}


def execute_url(identifier: str, **inputs: object) -> str:
    data = ";".join(f"{k}={quote(str(v), safe='/:')}" for k, v in inputs.items())
    return (
        f"/wps?service=WPS&version=1.0.0&request=Execute&identifier={identifier}&DataInputs={data}"
    )


def _path(url: str) -> str:
    return "/outputs/" + url.split("/outputs/", 1)[1]


def refs(resp) -> dict[str, str]:
    ids = [e.text for e in resp.xpath("//wps:Output/ows:Identifier")]
    return dict(zip(ids, resp.xpath("//wps:Output/wps:Reference/@href"), strict=True))


def exception(resp) -> tuple[str, str, str]:
    code = resp.xpath("/ows:ExceptionReport/ows:Exception/@exceptionCode")[0]
    locator = resp.xpath("/ows:ExceptionReport/ows:Exception/@locator")[0]
    return code, locator, resp.xpath_text("/ows:ExceptionReport/ows:Exception/ows:ExceptionText")


@pytest.fixture
def client(app_settings):
    return client_for(build_app(app_settings))


def test_extract_then_balance_sync(client, app_settings):
    root = app_settings.storage_root
    resp = client.get(
        execute_url(
            "extract-samples", raster="datasets/lsat7_2000_6band.tif",
            labels="datasets/labels/landsat96_points.gpkg", class_field="id", patch_size=5,
            name="pts",
        ),
        headers=ALICE,
    )  # fmt: skip
    assert resp.status_code == 200, resp.data
    out = refs(resp)
    assert out["samples"].endswith("/outputs/users/alice/samples/pts")
    summary = json.loads(client.get(_path(out["summary"]), headers=ALICE).data)
    assert summary["sample_set"] == "users/alice/samples/pts" and summary["counts"]["forest"] > 100
    assert (root / "users/alice/samples/pts/dataset.json").is_file()

    resp = client.get(
        execute_url(
            "balanced-sampling", samples=out["samples"], n_clusters=2, threshold=20, step=3
        ),
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.data
    out = refs(resp)
    assert set(out) == {"selection", "report", "plot"}
    run = root / out["selection"].split("/outputs/", 1)[1]
    with open(run, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"file", "index", "class", "cluster"}
    sel = json.loads((run.parent / "selection.json").read_text())
    assert sel == {"samples": "users/alice/samples/pts", "count": len(rows)}
    report = json.loads((run.parent / "report.json").read_text())
    assert report["threshold"] == 20 and report["step"] == 3
    assert (run.parent / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_become_exception_reports(client):
    resp = client.get(
        execute_url(
            "extract-samples", raster="datasets/lsat7_2000_6band.tif",
            labels="datasets/labels/landsat96_polygons.gpkg", class_field="nope", patch_size=5,
        ),
        headers=ALICE,
    )  # fmt: skip
    code, locator, text = exception(resp)
    assert (code, locator) == ("InvalidParameterValue", "class_field") and "label" in text
    resp = client.get(
        execute_url("balanced-sampling", samples="datasets/labels", threshold=0), headers=ALICE
    )
    code, locator, text = exception(resp)
    assert (code, locator) == ("InvalidParameterValue", "threshold") and "at least 1" in text
    resp = client.get(execute_url("balanced-sampling", samples="users/bob/samples"), headers=ALICE)
    assert exception(resp)[:2] == ("InvalidParameterValue", "samples")


def test_async_extract_and_balance_on_a_real_server(wps_server):
    from owslib.wps import ASYNC, WebProcessingService

    service = WebProcessingService(
        wps_server.url, headers=wps_server.headers("alice"), skip_caps=True, timeout=120
    )

    def run(identifier, inputs, outputs):
        execution = service.execute(
            identifier, inputs, output=[(o, True) for o in outputs], mode=ASYNC
        )
        deadline = time.monotonic() + 240
        while not execution.isComplete():
            assert time.monotonic() < deadline, execution.status
            execution.checkStatus(sleepSecs=0.3)
        assert execution.isSucceded(), [(e.code, e.text) for e in execution.errors]
        return {o.identifier: o.reference for o in execution.processOutputs}

    out = run(
        "extract-samples",
        [("raster", "datasets/lsat7_2000_6band.tif"),
         ("labels", "datasets/labels/landsat96_polygons.gpkg"), ("class_field", "label"),
         ("patch_size", "5"), ("stride", "2"), ("name", "polys")],
        ["samples", "summary"],
    )  # fmt: skip
    headers = wps_server.headers("alice")
    summary = requests.get(out["summary"], headers=headers, timeout=30).json()
    assert summary["counts"]["water"] > 0 and summary["skipped"]["edge"] >= 0
    result = run(
        "balanced-sampling",
        [("samples", out["samples"]), ("n_clusters", "2"), ("threshold", "10"), ("step", "2")],
        ["selection", "report", "plot"],
    )
    report = requests.get(result["report"], headers=headers, timeout=30).json()
    assert report["selected"] < report["samples"]
    text = requests.get(result["selection"], headers=headers, timeout=30).text
    assert text.startswith("file,index,class,cluster\n")
    assert len(text.strip().splitlines()) - 1 == report["selected"]
