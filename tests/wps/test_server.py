"""A real WPS server on 127.0.0.1 driven by OWSLib: every listed process, load, restart."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from owslib.wps import ASYNC, SYNC, WebProcessingService

from tests.wps.conftest import WpsServer
from tests.wps.procs import TEST_PROCESSES

PLACEHOLDER = re.compile(r"^\{([a-z0-9-]+):([a-z0-9_-]+)\}$")


def all_process_classes() -> list[type]:
    from wps_processes import process_classes

    return sorted(process_classes() + TEST_PROCESSES, key=lambda c: c.identifier)


def wps(server: WpsServer, user: str = "alice") -> WebProcessingService:
    return WebProcessingService(
        server.url, headers=server.headers(user), skip_caps=True, timeout=120
    )


def wait(execution, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not execution.isComplete():
        assert time.monotonic() < deadline, f"job not complete: {execution.status}"
        execution.checkStatus(sleepSecs=0.3)


def execute(
    server: WpsServer, identifier: str, inputs: dict[str, str], mode=ASYNC, user: str = "alice"
):
    classes = {c.identifier: c for c in all_process_classes()}
    resolved = []
    for key, value in inputs.items():
        match = PLACEHOLDER.match(value)
        if match:  # chain: run the producing process first, pass its output reference on
            first = execute(server, match[1], classes[match[1]].example_inputs, SYNC, user)
            value = {o.identifier: o.reference for o in first.processOutputs}[match[2]]
        resolved.append((key, value))
    outputs = [(o.identifier, True) for o in classes[identifier]().outputs]
    execution = wps(server, user).execute(identifier, resolved, output=outputs, mode=mode)
    if mode is ASYNC:
        wait(execution)
    assert execution.isSucceded(), [(e.code, e.locator, e.text) for e in execution.errors]
    return execution


def test_capabilities_and_descriptions(wps_server):
    service = wps(wps_server)
    service.getcapabilities()
    listed = sorted(p.identifier for p in service.processes)
    assert listed == [c.identifier for c in all_process_classes()]
    for identifier in listed:
        described = service.describeprocess(identifier)
        expected = type(next(c() for c in all_process_classes() if c.identifier == identifier))()
        assert [i.identifier for i in described.dataInputs] == [
            i.identifier for i in expected.inputs
        ]
        assert [o.identifier for o in described.processOutputs] == [
            o.identifier for o in expected.outputs
        ]


@pytest.mark.parametrize("mode", [SYNC, ASYNC], ids=["sync", "async"])
@pytest.mark.parametrize(
    "cls",
    [c for c in all_process_classes() if c.identifier != "test-fail"],  # fails on purpose
    ids=lambda c: c.identifier,
)
def test_execute_every_process(wps_server, cls, mode):
    if not cls.example_inputs:
        pytest.skip(f"{cls.identifier} declares no example_inputs to execute it with")
    execution = execute(wps_server, cls.identifier, cls.example_inputs, mode)
    headers = wps_server.headers("alice")
    for output in execution.processOutputs:
        assert output.reference.startswith(f"{wps_server.base}/outputs/users/alice/")
        assert requests.get(output.reference, headers=headers, timeout=30).status_code == 200
        assert (
            requests.get(
                output.reference, headers=wps_server.headers("bob"), timeout=30
            ).status_code
            == 403
        )
    if mode is ASYNC:
        status = requests.get(execution.statusLocation, headers=headers, timeout=30)
        assert "ProcessSucceeded" in status.text
        assert requests.get(execution.statusLocation, timeout=30).status_code == 401


def test_async_status_reports_percent_and_failures(wps_server):
    service = wps(wps_server)
    execution = service.execute(
        "test-sleep", [("seconds", "2")], output=[("result", True)], mode=ASYNC
    )
    seen = set()
    deadline = time.monotonic() + 120
    while not execution.isComplete() and time.monotonic() < deadline:
        execution.checkStatus(sleepSecs=0.2)
        seen.add(int(execution.percentCompleted or 0))
    assert execution.isSucceded()
    assert any(0 < p < 100 for p in seen), seen
    failed = service.execute(
        "test-fail", [("kind", "invalid")], output=[("never", True)], mode=ASYNC
    )
    wait(failed)
    assert failed.isComplete() and not failed.isSucceded()
    assert "InvalidParameterValue (threshold): threshold must be between 0 and 1" in (
        failed.errors[0].text
    )


def submit_async(
    server: WpsServer,
    identifier: str,
    inputs: list[tuple[str, str]],
    outputs: list[str],
    user: str = "alice",
) -> str:
    """Submit without waiting; return the status URL."""
    execution = wps(server, user).execute(
        identifier, inputs, output=[(o, True) for o in outputs], mode=ASYNC
    )
    assert execution.statusLocation, execution.errors
    return execution.statusLocation


def final_state(server: WpsServer, status_url: str, timeout: float) -> str:
    owner = status_url.split("/outputs/users/", 1)[1].split("/", 1)[0]
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        resp = requests.get(status_url, headers=server.headers(owner), timeout=30)
        assert resp.status_code == 200, resp.text
        text = resp.text
        for state in ("ProcessSucceeded", "ProcessFailed"):
            if state in text:
                return state
        state = "ProcessAccepted" if "ProcessAccepted" in text else "ProcessStarted"
        time.sleep(0.3)
    return state


def test_load_concurrent_requests_and_queued_jobs(wps_server):
    headers = wps_server.headers()

    def get(i: int) -> int:
        params = (
            {"service": "WPS", "request": "GetCapabilities"}
            if i % 2
            else {
                "service": "WPS",
                "version": "1.0.0",
                "request": "DescribeProcess",
                "identifier": "test-sleep",
            }
        )
        resp = requests.get(wps_server.url, params=params, headers=headers, timeout=120)
        assert "ExceptionReport" not in resp.text
        return resp.status_code

    with ThreadPoolExecutor(20) as pool:
        jobs = list(
            pool.map(
                lambda i: submit_async(
                    wps_server, "test-sleep", [("seconds", "0.3"), ("tag", f"job{i}")], ["result"]
                ),
                range(20),
            )
        )
        codes = list(pool.map(get, range(100)))
    assert codes == [200] * 100
    assert len(set(jobs)) == 20
    states = [final_state(wps_server, url, timeout=180) for url in jobs]
    assert states == ["ProcessSucceeded"] * 20
    tags = set()
    for url in jobs:
        result = Path(wps_server.storage, url.split("/outputs/", 1)[1]).with_name("result.json")
        tags.add(json.loads(result.read_text())["tag"])
    assert tags == {f"job{i}" for i in range(20)}  # no job lost, none run twice


def test_restart_gives_every_job_a_definite_state(tmp_path, test_storage_template):
    import shutil

    storage = tmp_path / "storage"
    shutil.copytree(test_storage_template, storage)
    server = WpsServer(
        storage, tmp_path / "state", tmp_path / "server.log", parallelprocesses="2"
    ).start()
    try:
        jobs = [
            submit_async(
                server,
                "test-sleep",
                [("seconds", "4"), ("tag", f"r{i}")],
                ["result"],
                user="bob" if i % 2 else "alice",
            )
            for i in range(6)
        ]
        time.sleep(1.5)  # two run, four wait in the queue
        server.kill()  # the server and its running jobs die at once
        server.start()
        states = [final_state(server, url, timeout=120) for url in jobs]
    finally:
        server.stop()
    assert set(states) <= {"ProcessSucceeded", "ProcessFailed"}, states
    assert states.count("ProcessSucceeded") >= 4, states  # the queued ones ran after restart
    for url, state in zip(jobs, states, strict=True):
        run = Path(storage, url.split("/outputs/", 1)[1]).parent
        owner = run.parts[-3]
        if state == "ProcessSucceeded":  # the owner survived queueing and the restart
            assert json.loads((run / "result.json").read_text())["user"] == owner
        else:
            assert "stopped while this job was running" in (run / "status.xml").read_text()
