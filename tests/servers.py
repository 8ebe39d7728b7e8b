"""Helpers for tests that start real servers on loopback."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

from geoportal.services import free_port

__all__ = ["free_port", "wait_for_http"]


def wait_for_http(
    url: str, timeout: float = 30, process: subprocess.Popen | None = None, ok=(200,)
) -> None:
    """Poll ``url`` until it answers with a status in ``ok`` (or any status if ok is None)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if ok is None or response.status in ok:
                    return
                last = response.status
        except urllib.error.HTTPError as exc:
            if ok is None or exc.code in ok:
                return
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s (last: {last})")
