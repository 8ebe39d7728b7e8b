"""The embedded JupyterHub of ``geoportal up``: one machine, the same pieces as the chart.

:func:`configure_local` fills a JupyterHub config object (``c``) from the platform
settings. ``hub/jupyterhub_config.py`` calls it; ``geoportal up`` starts
``jupyterhub -f hub/jupyterhub_config.py`` in a subprocess (the core never
imports JupyterHub).

Choices, and why:

* **Spawner**: ``SimpleLocalProcessSpawner``. Every user's server is a local
  process of the account running ``geoportal up``; no system users are needed,
  which is what a single researcher's machine wants. It is *not* an isolation
  boundary between users: for several people use the Kubernetes chart.
* **Authenticator**: ``local-password`` (default) is JupyterHub's
  ``DummyAuthenticator`` with a shared password generated on first start and
  kept in ``<state_dir>/hub/password`` (mode 600; ``geoportal up`` prints it).
  Any user name is accepted with that password. It is meant for local use only
  (the hub binds to loopback by default). ``dummy`` accepts any password
  (tests only).
* **Servers**: JupyterLab with the platform's Python (this virtual environment's
  interpreter is the kernel), ``--allow-root`` only when running as root, home
  ``<storage>/users/<name>/`` so a notebook sees the same files as the WPS,
  tutorial notebooks copied into ``~/notebooks/`` on first start (never over a
  user's edits).
* **Services**: the WPS at ``/services/wps`` (hub-managed, hub tokens and OAuth)
  plus the tile service, the idle culler when ``hub.idle_cull_seconds`` is set,
  and any ``extra_services``. Users are granted ``access:services`` so their
  tokens reach them.
* **State**: hub database (SQLite), cookie secret and proxy pid in
  ``<state_dir>/hub/``, so a second ``geoportal up`` finds everything again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoportal.errors import ConfigError
from geoportal.hostmemory import WORKER_ENVIRONMENT
from geoportal.services import free_port
from geoportal.settings import Settings

REPO = Path(__file__).resolve().parents[2]
WPS_SERVICE = "wps"


def hub_state_dir(settings: Settings) -> Path:
    path = Path(settings.state_dir) / "hub"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_password(settings: Settings) -> str:
    """The local-password authenticator's password (created on first use, mode 600)."""
    path = hub_state_dir(settings) / "password"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(12) + "\n")
    return path.read_text().strip()


def public_host(settings: Settings) -> str:
    """The host part of URLs handed to clients (loopback when bound to all interfaces)."""
    host = settings.hub.host
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def public_hub_url(settings: Settings) -> str:
    return f"http://{public_host(settings)}:{settings.hub.port}"


def platform_environment(settings: Settings) -> dict[str, str]:
    """GEOPORTAL_* variables every server and service of the platform gets."""
    env = {
        "GEOPORTAL_STORAGE": str(settings.storage_root),
        "GEOPORTAL_STATE_DIR": str(settings.state_dir),
        "GEOPORTAL_WPS__PUBLIC_URL": settings.wps.public_url
        or f"{public_hub_url(settings)}/services/{WPS_SERVICE}",
    }
    for key in ("GEOPORTAL_CONFIG", "GEOPORTAL_DASK__SCHEDULER", "GEOPORTAL_DEVICE"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    if settings.dask.scheduler:
        env["GEOPORTAL_DASK__SCHEDULER"] = settings.dask.scheduler
    return env


IDLE_CULLER = "idle-culler"


def idle_culler(
    settings: Settings, *, python: str = sys.executable
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The idle culler's service entry and role, or ``None`` when culling is off.

    ``hub.idle_cull_seconds`` > 0 stops single-user servers idle for that long
    (jupyterhub-idle-culler, the culler z2jh runs; the chart's ``cull`` values do
    the same on Kubernetes). Off by default: the platform promises unlimited
    working time, and a stopped server loses its kernels' state.
    """
    timeout = settings.hub.idle_cull_seconds
    if not timeout:
        return None
    every = max(1, min(60, timeout // 2))
    service = {
        "name": IDLE_CULLER,
        "command": [
            python,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={timeout}",
            f"--cull-every={every}",
        ],
    }
    role = {
        "name": IDLE_CULLER,
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": [IDLE_CULLER],
    }
    return service, role


def wps_service(
    settings: Settings, *, python: str = sys.executable, port: int | None = None
) -> dict[str, Any]:
    """The ``c.JupyterHub.services`` entry of the WPS (a hub-managed service)."""
    port = port or free_port()
    env = (
        platform_environment(settings)
        | WORKER_ENVIRONMENT
        | {
            "GEOPORTAL_WPS__PARALLELPROCESSES": str(settings.wps.parallelprocesses),
            "GEOPORTAL_WPS__MAXPROCESSES": str(settings.wps.maxprocesses),
            "PATH": os.environ.get("PATH", ""),
        }
    )
    if settings.wps.database:
        env["GEOPORTAL_WPS__DATABASE"] = settings.wps.database
    return {
        "name": WPS_SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "command": [python, "-m", "wps_processes.app", "--hub"],
        "environment": env,
        "oauth_no_confirm": True,
        "display": True,
        "info": {"description": "OGC WPS endpoint: append /wps"},
    }


def tile_service(settings: Settings, *, python: str = sys.executable) -> dict[str, Any] | None:
    """The tile service entry, when the tile service module is installed."""
    try:
        from geoportal_hub.tileservice import hub_service
    except ImportError:
        return None
    env = platform_environment(settings) | {"PATH": os.environ.get("PATH", "")}
    return hub_service(port=free_port(), python=python, environment=env)


def copy_tutorials(home: Path, source: Path = REPO / "notebooks") -> list[Path]:
    """Copy the tutorial notebooks into ``home/notebooks/`` (missing files only).

    Files a user already has are never overwritten, so edits survive restarts;
    a notebook deleted by its user comes back on the next start.
    """
    copied: list[Path] = []
    if not source.is_dir():
        return copied
    target = home / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(source.glob("*.ipynb")):
        dest = target / notebook.name
        if not dest.exists():
            shutil.copyfile(notebook, dest)
            copied.append(dest)
    return copied


def _authenticator(c: Any, settings: Settings) -> None:
    kind = settings.hub.authenticator
    if kind == "nextcloud":
        raise ConfigError(
            "hub.authenticator 'nextcloud' is configured by the Kubernetes chart; "
            "on one machine use 'local-password'",
            field="hub.authenticator",
        )
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
    if kind == "local-password":
        c.DummyAuthenticator.password = shared_password(settings)
    if settings.hub.admin_users:
        c.Authenticator.admin_users = set(settings.hub.admin_users)


def configure_local(
    c: Any,
    settings: Settings,
    *,
    python: str = sys.executable,
    notebooks: Path = REPO / "notebooks",
    extra_services: Sequence[dict[str, Any]] = (),
    tiles: bool = True,
) -> Any:
    """Configure the embedded hub on ``c`` (a traitlets config) from ``settings``.

    Args:
        c: the ``get_config()`` object of a jupyterhub_config.py.
        settings: the platform settings (hub host/port, storage, state, authenticator).
        python: the interpreter of users' servers and of the services (the kernel).
        notebooks: tutorial notebooks copied into each new home.
        extra_services: further ``c.JupyterHub.services`` entries (the hook for
            services other areas add).
        tiles: also run the tile service when it is installed.

    Returns:
        ``c``.
    """
    state = hub_state_dir(settings)
    storage_root = Path(settings.storage_root)
    (storage_root / "datasets").mkdir(parents=True, exist_ok=True)
    (storage_root / "users").mkdir(parents=True, exist_ok=True)
    bindir = str(Path(python).parent)

    c.JupyterHub.ip = settings.hub.host
    c.JupyterHub.port = settings.hub.port
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = free_port()
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.JupyterHub.log_level = settings.log_level.upper()

    proxy = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    if not proxy.exists():
        raise ConfigError(
            f"configurable-http-proxy is missing at {proxy}: run 'npm install' in {REPO}",
            field="hub",
        )
    c.ConfigurableHTTPProxy.command = [str(proxy)]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{free_port()}"
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

    _authenticator(c, settings)
    # access:services lets users' tokens (API and OAuth) reach the WPS and tile services
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", "access:services"]},
    ]

    c.JupyterHub.spawner_class = "simple"
    c.Spawner.cmd = [str(Path(bindir) / "jupyterhub-singleuser")]
    c.Spawner.default_url = "/lab"
    c.Spawner.args = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    c.Spawner.http_timeout = 60
    c.Spawner.start_timeout = 120
    c.SimpleLocalProcessSpawner.home_dir_template = str(storage_root / "users" / "{username}")

    env = platform_environment(settings)

    def user_environment(key: str) -> Any:
        return lambda spawner: {"GEOPORTAL_USER": spawner.user.name}[key]

    c.Spawner.environment = env | {
        "GEOPORTAL_USER": user_environment("GEOPORTAL_USER"),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def prepare_home(spawner: Any) -> None:
        from geoportal.storage import Storage

        home = Storage(storage_root).ensure_layout(spawner.user.name)
        copy_tutorials(home, notebooks)

    c.Spawner.pre_spawn_hook = prepare_home

    services = [wps_service(settings, python=python)]
    culler = idle_culler(settings, python=python)
    if culler is not None:
        services.append(culler[0])
        c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, culler[1]]
    if tiles:
        entry = tile_service(settings, python=python)
        if entry is not None:
            services.append(entry)
    services.extend(extra_services)
    c.JupyterHub.services = services
    return c
