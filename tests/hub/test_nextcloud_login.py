"""Sign-in through Nextcloud: a real JupyterHub, a real proxy, a stand-in Nextcloud.

The stand-in plays Nextcloud's OAuth2 app (authorize, token) and OCS user endpoint on
loopback, checking what a real Nextcloud checks (client id and secret, redirect URI,
single-use codes, the bearer token). The hub is configured only through
``geoportal_hub.nextcloud``; the login is driven with ``requests`` following redirects.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from geoportal_hub.nextcloud import (
    AUTHORIZE_PATH,
    TOKEN_PATH,
    NextcloudLogin,
    authenticator_settings,
    nextcloud_username,
)
from tests.servers import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[2]
PROXY = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
CLIENT_ID = "geoportal-hub"
CLIENT_SECRET = secrets.token_hex(16)
# A Nextcloud login name differs from the display name and the e-mail: the hub must take
# ocs.data.id, nothing else.
ACCOUNT = {
    "id": "alice.m",
    "display-name": "Alice Martin",
    "displayname": "Alice Martin",
    "email": "amartin@example.org",
    "groups": ["staff"],
}


@dataclass
class FakeNextcloud:
    """State of the stand-in: issued codes and tokens, and what it was asked."""

    redirect_uri: str = ""
    codes: dict[str, str] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)


def make_handler(state: FakeNextcloud) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            state.calls.append(url.path)
            if url.path == AUTHORIZE_PATH:
                if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
                    return self._json(400, {"error": "invalid_client"})
                if query.get("redirect_uri") != state.redirect_uri:
                    return self._json(400, {"error": "redirect_uri mismatch"})
                code = secrets.token_urlsafe(16)
                state.codes[code] = query["redirect_uri"]
                target = (
                    query["redirect_uri"]
                    + "?"
                    + urlencode({"code": code, "state": query.get("state", "")})
                )
                self.send_response(303)
                self.send_header("Location", target)
                self.end_headers()
                return None
            if url.path == "/ocs/v2.php/cloud/user":
                auth = self.headers.get("Authorization", "")
                if (
                    query.get("format") != "json"
                    or auth.removeprefix("Bearer ") not in state.tokens
                ):
                    return self._json(401, {"ocs": {"meta": {"status": "failure"}}})
                meta = {"status": "ok", "statuscode": 200, "message": "OK"}
                return self._json(200, {"ocs": {"meta": meta, "data": ACCOUNT}})
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            state.calls.append(url.path)
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if url.path != TOKEN_PATH:
                return self._json(404, {"error": "not found"})
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return self._json(400, {"error": "invalid_client"})
            redirect = state.codes.pop(form.get("code", ""), None)
            if form.get("grant_type") != "authorization_code" or redirect is None:
                return self._json(400, {"error": "invalid_grant"})
            if form.get("redirect_uri") != redirect:
                return self._json(400, {"error": "invalid_grant"})
            token = secrets.token_urlsafe(24)
            state.tokens.add(token)
            return self._json(
                200,
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "refresh_token": secrets.token_urlsafe(24),
                    "user_id": ACCOUNT["id"],
                },
            )

    return Handler


@pytest.fixture
def nextcloud() -> Iterator[tuple[str, FakeNextcloud]]:
    state = FakeNextcloud()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", state
    finally:
        server.shutdown()
        server.server_close()


HUB_CONFIG = """
from geoportal_hub.nextcloud import NextcloudLogin, configure_nextcloud
from geoportal_hub.user_storage import USERNAME_PATTERN

configure_nextcloud(c, NextcloudLogin.model_validate({login!r}))
c.Authenticator.username_pattern = USERNAME_PATTERN
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{tmp}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{tmp}/cookie_secret"
c.JupyterHub.pid_file = "{tmp}/hub.pid"
c.JupyterHub.default_url = "/hub/home"
c.JupyterHub.services = [{{"name": "checker", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "checker", "scopes": ["list:users", "read:users"], "services": ["checker"]}}
]
"""


@pytest.fixture
def hub(tmp_path: Path, nextcloud: tuple[str, FakeNextcloud]) -> Iterator[tuple[str, str]]:
    if not PROXY.exists():
        pytest.fail(f"{PROXY} is missing: run ./install.sh (npm configurable-http-proxy)")
    base, state = nextcloud
    port, hub_port, proxy_api_port = free_port(), free_port(), free_port()
    hub_url = f"http://127.0.0.1:{port}"
    state.redirect_uri = f"{hub_url}/hub/oauth_callback"
    token = secrets.token_hex(16)
    login = NextcloudLogin(
        base_url=base, client_id=CLIENT_ID, callback_url=state.redirect_uri
    ).model_dump(by_alias=True)
    config = tmp_path / "jupyterhub_config.py"
    config.write_text(
        HUB_CONFIG.format(
            login=login,
            port=port,
            hub_port=hub_port,
            proxy_api_port=proxy_api_port,
            proxy=str(PROXY),
            tmp=tmp_path,
            token=token,
        )
    )
    env = {
        **os.environ,
        "OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16),
        "PYTHONPATH": str(REPO),
    }
    log = (tmp_path / "hub.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(f"{hub_url}/hub/api", timeout=90, process=process)
        yield hub_url, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if process.returncode not in (0, -15):
            print((tmp_path / "hub.log").read_text()[-4000:])


def test_user_signs_in_through_nextcloud_with_the_ocs_id(
    hub: tuple[str, str], nextcloud: tuple[str, FakeNextcloud]
) -> None:
    hub_url, token = hub
    _, state = nextcloud
    with requests.Session() as browser:
        response = browser.get(f"{hub_url}/hub/oauth_login", timeout=30)
        assert response.status_code == 200, response.text[:500]
        assert urlsplit(response.url).path == "/hub/home"
        assert ACCOUNT["id"] in response.text
        # the whole flow went through the three Nextcloud endpoints, once each
        assert state.calls == [AUTHORIZE_PATH, TOKEN_PATH, "/ocs/v2.php/cloud/user"]
        assert not state.codes, "the authorization code was not redeemed"
    users = requests.get(
        f"{hub_url}/hub/api/users", headers={"Authorization": f"token {token}"}, timeout=30
    ).json()
    assert [u["name"] for u in users] == [ACCOUNT["id"]]


def test_wrong_client_secret_signs_nobody_in(
    hub: tuple[str, str], nextcloud: tuple[str, FakeNextcloud], monkeypatch
) -> None:
    hub_url, token = hub
    _, state = nextcloud
    monkeypatch.setattr(sys.modules[__name__], "CLIENT_SECRET", "not-the-secret")
    with requests.Session() as browser:
        response = browser.get(f"{hub_url}/hub/oauth_login", timeout=30)
    assert response.status_code >= 400
    assert TOKEN_PATH in state.calls and "/ocs/v2.php/cloud/user" not in state.calls
    users = requests.get(
        f"{hub_url}/hub/api/users", headers={"Authorization": f"token {token}"}, timeout=30
    ).json()
    assert users == []


def test_authenticator_urls_follow_nextclouds_layout() -> None:
    login = NextcloudLogin(baseUrl="https://cloud.example.org/")
    settings = authenticator_settings(login)
    assert settings["authorize_url"] == "https://cloud.example.org/index.php/apps/oauth2/authorize"
    assert settings["token_url"] == "https://cloud.example.org/index.php/apps/oauth2/api/v1/token"
    assert settings["userdata_url"] == "https://cloud.example.org/ocs/v2.php/cloud/user?format=json"
    assert settings["username_claim"] is nextcloud_username
    assert "client_id" not in settings  # falls back to OAUTH_CLIENT_ID


@pytest.mark.parametrize(
    "base, message",
    [("cloud.example.org", "http"), ("https://cloud.example.org/index.php", "index.php")],
)
def test_bad_base_url_is_refused(base: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NextcloudLogin(baseUrl=base)


@pytest.mark.parametrize(
    "answer", [{}, {"ocs": {"data": {}}}, {"ocs": {"data": {"id": ""}}}, {"ocs": None}]
)
def test_answer_without_ocs_data_id_fails_the_login(answer: dict) -> None:
    with pytest.raises(ValueError, match="ocs.data.id"):
        nextcloud_username(answer)
