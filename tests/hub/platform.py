"""``geoportal up`` in a subprocess for the hub and browser tests (one per module)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from geoportal.services import alive, descendants, free_port
from tests.conftest import REPO


class RunningPlatform:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GEOPORTAL_")} | {
            "GEOPORTAL_STORAGE": str(base / "storage"),
            "GEOPORTAL_STATE_DIR": str(base / "state"),
            "GEOPORTAL_DASK__DASHBOARD_PORT": "0",
            "GEOPORTAL_DASK__N_WORKERS": "1",
        }
        self.out = base / "up.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 150) -> RunningPlatform:
        with open(self.out, "wb") as handle:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "geoportal"), "up", "--port", str(self.port)],
                env=self.env,
                cwd=self.base,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while "Press Ctrl-C" not in self.out.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.base / "state" / "logs" / "jupyterhub.log"
                tail = log.read_text()[-3000:] if log.exists() else ""
                raise RuntimeError(f"geoportal up failed:\n{self.out.read_text()}\n{tail}")
            time.sleep(0.5)
        return self

    @property
    def banner(self) -> str:
        return self.out.read_text()

    @property
    def password(self) -> str:
        match = re.search(r"password (\S+) ", self.banner)
        assert match, self.banner
        return match[1]

    def login(self, user: str) -> requests.Session:
        session = requests.Session()
        session.get(f"{self.url}/hub/login", timeout=30)
        resp = session.post(
            f"{self.url}/hub/login",
            data={
                "username": user,
                "password": self.password,
                "_xsrf": session.cookies.get("_xsrf", ""),
            },
            allow_redirects=False,
            timeout=30,
        )
        assert resp.status_code == 302, resp.text[:500]
        return session

    def token(self, user: str) -> str:
        self.login(user)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "jupyterhub",
                "token",
                user,
                "-f",
                str(REPO / "hub" / "jupyterhub_config.py"),
            ],
            env=self.env | {"GEOPORTAL_HUB__PORT": str(self.port)},
            cwd=self.base / "state",
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def stop(self) -> list[int]:
        """SIGINT like Ctrl-C; return the pids of its tree still alive afterwards."""
        if self.proc is None:
            return []
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(1)
        left = [p for p in tree if alive(p)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        self.proc = None
        return left


def platform_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    running = RunningPlatform(tmp_path_factory.mktemp("platform")).start()
    try:
        yield running
    finally:
        running.stop()
