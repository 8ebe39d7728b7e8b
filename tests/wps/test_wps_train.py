"""train-model through the WPS: in-process sync with real files, errors, async percent."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest
from pywps.tests import client_for

from geoportal.checkpoint import load_model
from geoportal.training.synthetic import make_sample_set
from tests.wps.server import TOKENS, build_app

ALICE = {"Authorization": f"token {TOKENS['alice']}"}
CONFIG = "epochs: 2\nbatch_size: 16\nmodel: {args: {width: 8, depth: 2}}"


def execute_url(identifier: str, status: bool = False, **inputs: object) -> str:
    data = ";".join(f"{k}={quote(str(v), safe='/:')}" for k, v in inputs.items())
    url = (
        f"/wps?service=WPS&version=1.0.0&request=Execute&identifier={identifier}&DataInputs={data}"
    )
    outputs = "model@asReference=true;metrics@asReference=true;run@asReference=true"
    url += f"&ResponseDocument={outputs}"
    if status:
        url += "&storeExecuteResponse=true&status=true"
    return url


def refs(resp) -> dict[str, str]:
    ids = [e.text for e in resp.xpath("//wps:Output/ows:Identifier")]
    return dict(zip(ids, resp.xpath("//wps:Output/wps:Reference/@href"), strict=True))


def exception(resp) -> tuple[str, str, str]:
    code = resp.xpath("/ows:ExceptionReport/ows:Exception/@exceptionCode")[0]
    locator = resp.xpath("/ows:ExceptionReport/ows:Exception/@locator")[0]
    return code, locator, resp.xpath_text("/ows:ExceptionReport/ows:Exception/ows:ExceptionText")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; steadier on a loaded 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture
def samples(app_settings):
    root = app_settings.storage_root
    make_sample_set(root / "users/alice/samples/syn", bands=6, per_class=30, seed=3,
                    scene_dir=root / "users/alice/labels/scene")  # fmt: skip
    return "users/alice/samples/syn"


@pytest.fixture
def client(app_settings):
    return client_for(build_app(app_settings))


def test_train_model_sync_writes_the_run(client, app_settings, samples):
    resp = client.get(execute_url("train-model", samples=samples, config=CONFIG, name="wps1"),
                      headers=ALICE)  # fmt: skip
    assert resp.status_code == 200, resp.data
    out = refs(resp)
    assert out["model"].endswith("/outputs/users/alice/models/wps1/best.pt")
    assert out["run"].endswith("/outputs/users/alice/models/wps1")
    run = app_settings.storage_root / "users/alice/models/wps1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["completed_epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["bands"] == [f"band {i}" for i in range(1, 7)]
    model, info = load_model(run / "best.pt")
    assert info.in_channels == 6 and info.kind == "patch"
    served = client.get("/outputs/" + out["metrics"].split("/outputs/", 1)[1], headers=ALICE)
    assert json.loads(served.data)["run"] == "wps1"


@pytest.mark.parametrize(
    ("inputs", "code", "locator", "words"),
    [
        ({"config": "epochs: 1\nlearning_rate: 3"}, "InvalidParameterValue", "config",
         "learning_rate"),
        ({"config": "optimizer: {name: rmsprop}"}, "InvalidParameterValue", "config",
         "optimizer.name"),
        ({"config": "bands: 3"}, "InvalidParameterValue", "config", "bands"),
        ({"config": "epochs: [1"}, "InvalidParameterValue", "config", "YAML"),
        ({"samples": "users/bob/samples"}, "InvalidParameterValue", "samples", "another user"),
        ({"samples": ""}, "MissingParameterValue", "samples", "required"),
        ({"name": "../x"}, "InvalidParameterValue", "run", "not allowed"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_input(client, samples, inputs, code, locator, words):
    args = {"samples": samples, "config": "epochs: 1", **inputs}
    resp = client.get(execute_url("train-model", **args), headers=ALICE)
    got = exception(resp)
    assert got[:2] == (code, locator), got
    assert words in got[2]


def test_async_reports_percent_per_epoch(client, app_settings, samples):
    config = "epochs: 4\nbatch_size: 16\nmodel: {args: {width: 8, depth: 2}}"
    resp = client.get(
        execute_url("train-model", status=True, samples=samples, config=config, name="async1"),
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.data
    location = resp.xpath("/wps:ExecuteResponse/@statusLocation")[0]
    path = "/outputs/" + location.split("/outputs/", 1)[1]
    seen: set[int] = set()
    deadline = time.monotonic() + 240
    while True:
        status = client.get(path, headers=ALICE)
        text = status.data.decode()
        if "ProcessSucceeded" in text or "ProcessFailed" in text:
            break
        for pct in status.xpath("//wps:ProcessStarted/@percentCompleted"):
            seen.add(int(pct))
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert "ProcessSucceeded" in text, text
    assert "best.pt" in text
    run = app_settings.storage_root / "users/alice/models/async1"
    assert json.loads((run / "metrics.json").read_text())["completed_epochs"] == 4
    assert seen, "no intermediate status was seen"
    assert seen <= {0, 1, 26, 50, 74, 98, 99, 100} | set(range(0, 3)), seen


def test_train_on_a_balanced_selection(client, app_settings):
    resp = client.get(
        "/wps?service=WPS&version=1.0.0&request=Execute&identifier=extract-samples&DataInputs="
        "raster=datasets/lsat7_2000_6band.tif;labels=datasets/labels/landsat96_polygons.gpkg;"
        "class_field=id;patch_size=5;stride=3;name=nc"
        "&ResponseDocument=samples@asReference=true",
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.data
    samples = refs(resp)["samples"]
    resp = client.get(
        "/wps?service=WPS&version=1.0.0&request=Execute&identifier=balanced-sampling&DataInputs="
        f"samples={quote(samples, safe='/:')};threshold=10;step=2"
        "&ResponseDocument=selection@asReference=true",
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.data
    selection = refs(resp)["selection"]
    resp = client.get(
        execute_url("train-model", samples=selection, config="epochs: 1\nbatch_size: 16",
                    name="balanced"),
        headers=ALICE,
    )  # fmt: skip
    assert resp.status_code == 200, resp.data
    run = app_settings.storage_root / "users/alice/models/balanced"
    metrics = json.loads((run / "metrics.json").read_text())
    rows = (app_settings.storage_root / selection.split("/outputs/", 1)[1]).read_text()
    assert metrics["train_samples"] + metrics["val_samples"] == len(rows.strip().splitlines()) - 1
    assert metrics["bands"][0].startswith("ETM+")
