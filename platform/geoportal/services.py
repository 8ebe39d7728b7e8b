"""Process lifecycle of the platform on one machine (``geoportal up``, ``geoportal wps``).

Each service is a subprocess in its own process group, so that stopping it also
stops what it started (the hub's proxy, users' servers, WPS job runners). Before
a group is signalled, the whole process tree below it is recorded; whatever
survives the polite signal (SIGINT, then SIGTERM) is killed, including children
that moved to another group or session (JupyterHub's local spawner starts
users' servers in their own sessions). Nothing here imports JupyterHub or PyWPS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc; empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_http(url: str, timeout: float = 60.0, ok: Sequence[int] = (200, 302, 401, 403)) -> bool:
    """Poll ``url`` until it answers with one of ``ok`` statuses."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - our URL
                if response.status in ok:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


@dataclass
class ManagedProcess:
    """A service subprocess in its own process group, with its log in a file.

    Attributes:
        name: shown in messages.
        argv: the command.
        env: its complete environment.
        log: the file that receives its stdout and stderr.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log: Path
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen(
                list(self.argv),
                env=dict(self.env),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT the group, then SIGTERM, then SIGKILL anything of its tree still alive."""
        if self.proc is None:
            return
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        tree += [p for p in descendants(self.proc.pid) if p not in tree]
        deadline = time.monotonic() + 3.0
        while any(alive(p) for p in tree[1:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in tree:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def banner(
    *,
    hub_url: str,
    wps_url: str,
    dask_dashboard: str | None,
    dask_scheduler: str,
    storage_root: Path,
    login: str,
    logs: Path,
    datasets_empty: bool,
) -> str:
    """The text ``geoportal up`` prints once everything answers."""
    lines = [
        "",
        "Geoportal is running.",
        f"  JupyterHub      {hub_url}/",
        f"  login           {login}",
        f"  WPS (OGC)       {wps_url}   (send 'Authorization: token <hub API token>')",
        f"  Dask scheduler  {dask_scheduler}",
    ]
    if dask_dashboard:
        lines.append(f"  Dask dashboard  {dask_dashboard}")
    lines += [
        f"  storage         {storage_root}",
        f"  logs            {logs}",
    ]
    if datasets_empty:
        lines += [
            "",
            f"  No scenes yet: {storage_root / 'datasets'} is empty. Add scenes with",
            "    geoportal datasets add <scene.tif>      (or copy GeoTIFFs into that folder)",
        ]
    lines += ["", "Press Ctrl-C to stop everything (users' data stays in the storage).", ""]
    return "\n".join(lines)
