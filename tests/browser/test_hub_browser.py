"""Headless Chromium on the hub ``geoportal up`` started: log in, start a server, see JupyterLab."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub.platform import RunningPlatform, platform_fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

up = pytest.fixture(scope="module")(platform_fixture)


def test_login_start_server_and_see_jupyterlab(up: RunningPlatform, artifacts: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{up.url}/hub/login", timeout=60_000)
            page.fill("input[name=username]", "dora")
            page.fill("input[name=password]", up.password)
            page.screenshot(path=str(artifacts / "hub_login.png"))
            page.click("input[type=submit], button[type=submit]")
            # the hub spawns the server on login and redirects into JupyterLab
            page.wait_for_url("**/user/dora/lab**", timeout=120_000)
            page.wait_for_selector("#jp-main-dock-panel, .jp-LabShell", timeout=120_000)
            # the file browser shows the tutorial folder copied into the new home
            page.locator(".jp-DirListing-itemText", has_text="notebooks").first.wait_for(
                timeout=60_000
            )
            page.screenshot(path=str(artifacts / "hub_jupyterlab.png"))
            assert "JupyterLab" in page.title() or page.locator(".jp-LabShell").count() == 1
        finally:
            browser.close()
