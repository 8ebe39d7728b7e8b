"""The WPS app in-process (``pywps.tests.client_for``): errors, confinement, files, auth."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest
from pywps.tests import client_for

from geoportal.errors import ConfigError
from tests.wps.server import TOKENS, build_app

PUBLIC = {"extract-samples", "balanced-sampling", "train-model", "run-inference", "assess-accuracy"}
ALICE = {"Authorization": f"token {TOKENS['alice']}"}
BOB = {"Authorization": f"token {TOKENS['bob']}"}


def execute_url(identifier: str, outputs: tuple[str, ...] = (), **inputs: str) -> str:
    data = ";".join(f"{k}={quote(str(v), safe='/:')}" for k, v in inputs.items())
    url = (
        f"/wps?service=WPS&version=1.0.0&request=Execute&identifier={identifier}&DataInputs={data}"
    )
    if outputs:
        url += "&ResponseDocument=" + ";".join(f"{o}@asReference=true" for o in outputs)
    return url


@pytest.fixture
def app(app_settings):
    return build_app(app_settings)


@pytest.fixture
def client(app):
    return client_for(app)


def exception_of(resp) -> tuple[str, str, str]:
    code = resp.xpath("/ows:ExceptionReport/ows:Exception/@exceptionCode")[0]
    locator = resp.xpath("/ows:ExceptionReport/ows:Exception/@locator")[0]
    text = resp.xpath_text("/ows:ExceptionReport/ows:Exception/ows:ExceptionText")
    return code, locator, text


def references(resp) -> dict[str, str]:
    ids = [e.text for e in resp.xpath("//wps:Output/ows:Identifier")]
    hrefs = resp.xpath("//wps:Output/wps:Reference/@href")
    return dict(zip(ids, hrefs, strict=True))


def test_published_processes_are_sorted_public_and_unique():
    from wps_processes import processes

    ids = [p.identifier for p in processes()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert set(ids) <= PUBLIC, f"only the public processes may be published, got {ids}"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "token wrong"}, {"Authorization": "x"}])
def test_unauthenticated_requests_are_refused(client, headers):
    resp = client.get("/wps?service=WPS&request=GetCapabilities", headers=headers)
    assert resp.status_code == 401
    resp = client.get("/outputs/users/alice/runs/", headers=headers)
    assert resp.status_code == 401


def test_capabilities_list_processes(client):
    resp = client.get("/wps?service=WPS&request=GetCapabilities", headers=ALICE)
    assert resp.status_code == 200
    ids = {e.text for e in resp.xpath("//wps:Process/ows:Identifier")}
    assert {"test-first-band", "test-sleep"} <= ids


@pytest.mark.parametrize(
    ("kind", "code", "locator", "text", "status"),
    [
        ("invalid", "InvalidParameterValue", "threshold", "between 0 and 1", 400),
        ("missing", "MissingParameterValue", "class_field", "name the label column", 400),
        ("core", "NoApplicableCode", "", "train a model first", 400),
        ("bug", "NoApplicableCode", "", "administrator", 500),
    ],
)
def test_errors_become_exception_reports(client, kind, code, locator, text, status, caplog):
    resp = client.get(execute_url("test-fail", kind=kind), headers=ALICE)
    assert resp.status_code == status
    got = exception_of(resp)
    assert got[0] == code and got[1] == locator and text in got[2]
    assert "/etc/shadow" not in resp.get_data(as_text=True)
    if kind == "bug":
        assert "secret internal detail" in caplog.text  # logged with traceback, not shown


def test_missing_and_invalid_inputs(client):
    resp = client.get(execute_url("test-first-band", scale="2"), headers=ALICE)
    assert exception_of(resp)[:2] == ("MissingParameterValue", "raster")
    resp = client.get(
        execute_url("test-first-band", raster="datasets/RGB.byte.tif", scale="-1"), headers=ALICE
    )
    assert exception_of(resp)[:2] == ("InvalidParameterValue", "scale")
    resp = client.get(execute_url("test-first-band", raster="datasets/nothing.tif"), headers=ALICE)
    assert exception_of(resp)[:2] == ("InvalidParameterValue", "raster")


def test_sync_execute_writes_in_run_folder_and_serves_files(client, app_settings):
    resp = client.get(
        execute_url(
            "test-first-band", ("band", "stats"), raster="datasets/RGB.byte.tif", scale="2"
        ),
        headers=ALICE,
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    refs = references(resp)
    prefix = "http://127.0.0.1:5999/outputs/users/alice/runs/"
    assert refs["band"].startswith(prefix) and refs["band"].endswith("/band1.tif")
    run = app_settings.storage_root / "users" / "alice" / "runs" / refs["band"].split("/")[-2]
    assert (run / "band1.tif").is_file() and (run / "job.json").is_file()
    assert not (run / ".work").exists()  # PyWPS's scratch is cleaned
    import rasterio

    with (
        rasterio.open(run / "band1.tif") as out,
        rasterio.open(app_settings.storage_root / "datasets" / "RGB.byte.tif") as src,
    ):
        assert out.count == 1
        assert (out.read(1) == src.read(1).astype("float32") * 2).all()
    path = refs["stats"][len("http://127.0.0.1:5999") :]
    assert json.loads(client.get(path, headers=ALICE).get_data())["sum"] > 0
    assert client.get(path, headers=BOB).status_code == 403
    listing = client.get(path.rsplit("/", 1)[0], headers=ALICE)
    names = {e["name"] for e in json.loads(listing.get_data())["entries"]}
    assert {"band1.tif", "stats.json", "job.json"} <= names
    # Range requests work (GDAL's /vsicurl/ needs them)
    part = client.get(
        refs["band"][len("http://127.0.0.1:5999") :], headers=ALICE | {"Range": "bytes=0-3"}
    )
    assert part.status_code == 206 and part.get_data() in (b"II*\x00", b"MM\x00*")


def test_outputs_chain_by_reference(client):
    resp = client.get(execute_url("test-sleep", ("result",), seconds="0", tag="x"), headers=ALICE)
    ref = references(resp)["result"]
    resp = client.get(execute_url("test-read", ("copy",), location=ref), headers=ALICE)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    copy = client.get(references(resp)["copy"][len("http://127.0.0.1:5999") :], headers=ALICE)
    assert json.loads(copy.get_data()) == {"tag": "x", "user": "alice"}
    # bob may not read alice's output, even by its URL
    resp = client.get(execute_url("test-read", ("copy",), location=ref), headers=BOB)
    code, locator, text = exception_of(resp)
    assert (code, locator) == ("InvalidParameterValue", "location") and "another user" in text


@pytest.mark.parametrize(
    "location",
    [
        "users/bob/labels/secret.txt",
        "users/alice/../bob/labels/secret.txt",
        "{root}/users/bob/labels/secret.txt",
        "/etc/passwd",
        "file:///etc/passwd",
        "http://evil.example/users/bob/labels/secret.txt",
        "users/alice/labels/link-to-bob.txt",
    ],
)
def test_no_input_reads_another_users_labels(client, app_settings, location):
    root = app_settings.storage_root
    secret = root / "users" / "bob" / "labels" / "secret.txt"
    secret.write_text("bob's labels")
    link = root / "users" / "alice" / "labels" / "link-to-bob.txt"
    if not link.exists():
        os.symlink(secret, link)
    resp = client.get(
        execute_url("test-read", ("copy",), location=location.format(root=root)), headers=ALICE
    )
    code, locator, _ = exception_of(resp)
    assert (code, locator) == ("InvalidParameterValue", "location")
    assert "bob's labels" not in resp.get_data(as_text=True)
    assert not list((root / "users" / "alice" / "runs").rglob("copy.txt"))


@pytest.mark.parametrize(
    "target",
    [
        "users/bob/labels/x.txt",
        "datasets/x.txt",
        "users/alice/../bob/x.txt",
        "/tmp/x.txt",
        "users/alice",
    ],
)
def test_no_output_lands_outside_the_callers_area(client, app_settings, target):
    root = app_settings.storage_root
    before = {p for p in root.rglob("*") if p.is_file()}
    resp = client.get(execute_url("test-write", ("written",), target=target), headers=ALICE)
    code, locator, _ = exception_of(resp)
    assert (code, locator) == ("InvalidParameterValue", "target")
    assert {p for p in root.rglob("*") if p.is_file()} == before
    resp = client.get(
        execute_url("test-write", ("written",), target="users/alice/labels/ok.txt"), headers=ALICE
    )
    assert resp.status_code == 200
    assert (root / "users" / "alice" / "labels" / "ok.txt").read_text() == "hello"


@pytest.mark.parametrize(
    "path",
    [
        "/outputs/users/bob/labels/secret.txt",
        "/outputs/users/alice/labels/link-to-bob.txt",
        "/outputs/users/alice/%2e%2e/bob/labels/secret.txt",
        "/outputs/datasets/RGB.byte.tif",
        "/outputs/../state/wps/jobs.sqlite",
    ],
)
def test_file_server_is_confined(client, app_settings, path):
    root = app_settings.storage_root
    secret = root / "users" / "bob" / "labels" / "secret.txt"
    secret.write_text("bob's labels")
    os.symlink(secret, root / "users" / "alice" / "labels" / "link-to-bob.txt")
    resp = client.get(path, headers=ALICE)
    assert resp.status_code in (403, 404)
    assert b"bob's labels" not in resp.get_data()


def test_in_memory_job_log_is_refused(app_settings):
    from wps_processes.app import job_database

    settings = app_settings.model_copy(
        update={"wps": app_settings.wps.model_copy(update={"database": "sqlite:///:memory:"})}
    )
    with pytest.raises(ConfigError, match="in-memory"):
        job_database(settings)
    assert job_database(app_settings).startswith("sqlite:///")
    assert str(app_settings.state_dir) in job_database(app_settings)


def test_standalone_auth_is_loopback_only_without_token():
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from wps_processes.app import LocalAuth, check_standalone_bind

    with pytest.raises(ConfigError, match="without authentication"):
        check_standalone_bind("0.0.0.0", None)
    check_standalone_bind("0.0.0.0", "tok")
    check_standalone_bind("127.0.0.1", None)

    def request(addr: str, headers: dict[str, str] | None = None) -> Request:
        env = EnvironBuilder(
            headers=headers or {}, environ_base={"REMOTE_ADDR": addr}
        ).get_environ()
        return Request(env)

    assert LocalAuth("me").user(request("127.0.0.1")) == "me"
    assert LocalAuth("me").user(request("10.1.2.3")) is None
    with_token = LocalAuth("me", "s3cret")
    assert with_token.user(request("10.1.2.3", {"Authorization": "token s3cret"})) == "me"
    assert with_token.user(request("127.0.0.1")) is None
