"""A real hub started by ``geoportal up``: proxy, local spawner, the WPS service behind it."""

from __future__ import annotations

import time

import pytest
import requests
from owslib.wps import WebProcessingService

from tests.hub.platform import RunningPlatform, platform_fixture

pytestmark = pytest.mark.slow

up = pytest.fixture(scope="module")(platform_fixture)


def test_banner_says_how_to_log_in_and_add_scenes(up: RunningPlatform):
    banner = up.banner
    assert f"{up.url}/" in banner and "Ctrl-C" in banner
    assert f"{up.url}/services/wps/wps" in banner
    assert "Dask dashboard  http://127.0.0.1:" in banner
    assert "No scenes yet" in banner and "geoportal datasets add" in banner


def test_users_server_spawns_and_wps_needs_the_token(up: RunningPlatform):
    token = up.token("alice")
    headers = {"Authorization": f"token {token}"}
    resp = requests.post(f"{up.url}/hub/api/users/alice/server", headers=headers, timeout=60)
    assert resp.status_code in (201, 202), resp.text
    deadline = time.monotonic() + 90
    status = None
    while time.monotonic() < deadline:
        status = requests.get(f"{up.url}/user/alice/api/status", headers=headers, timeout=30)
        if status.status_code == 200:
            break
        time.sleep(1)
    assert status is not None and status.status_code == 200
    home = up.base / "storage" / "users" / "alice"
    assert (home / "runs").is_dir() and list((home / "notebooks").glob("*.ipynb"))

    wps_url = f"{up.url}/services/wps/wps"
    service = WebProcessingService(wps_url, headers=headers, skip_caps=True, timeout=60)
    service.getcapabilities()
    from wps_processes import processes

    assert sorted(p.identifier for p in service.processes) == [p.identifier for p in processes()]
    params = {"service": "WPS", "request": "GetCapabilities"}
    assert requests.get(wps_url, params=params, timeout=30).status_code == 401
    bad = {"Authorization": "token not-a-hub-token"}
    assert requests.get(wps_url, params=params, headers=bad, timeout=30).status_code == 401


def test_ctrl_c_leaves_no_process_and_restart_keeps_data(tmp_path_factory):
    first = RunningPlatform(tmp_path_factory.mktemp("restart")).start()
    marker = first.base / "storage" / "users" / "carol" / "labels" / "mine.txt"
    marker.parent.mkdir(parents=True)
    marker.write_text("kept")
    password = first.password
    assert first.stop() == []
    again = RunningPlatform(first.base)
    again.port = first.port
    again.url = first.url
    again.start()
    try:
        assert again.password == password  # same state
        assert marker.read_text() == "kept"
        again.login("carol")
    finally:
        assert again.stop() == []


def test_idle_servers_are_culled_when_configured(tmp_path_factory):
    """hub.idle_cull_seconds starts jupyterhub-idle-culler, which stops an idle server."""
    platform = RunningPlatform(tmp_path_factory.mktemp("cull"))
    platform.env["GEOPORTAL_HUB__IDLE_CULL_SECONDS"] = "4"
    platform.start()
    try:
        token = platform.token("dave")
        headers = {"Authorization": f"token {token}"}
        user_url = f"{platform.url}/hub/api/users/dave"
        resp = requests.post(f"{user_url}/server", headers=headers, timeout=60)
        assert resp.status_code in (201, 202), resp.text
        seen_running = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            servers = requests.get(user_url, headers=headers, timeout=30).json()["servers"]
            if servers.get("", {}).get("ready"):
                seen_running = True
            elif seen_running and not servers:
                break
            time.sleep(1)
        else:
            raise AssertionError(f"server not culled; running seen: {seen_running}")
        log = (platform.base / "state" / "logs" / "jupyterhub.log").read_text()
        assert "idle-culler" in log
    finally:
        assert platform.stop() == []
