"""``geoportal up``: the whole platform on one machine, stopped with Ctrl-C.

Starts JupyterHub (``hub/jupyterhub_config.py``: proxy, local spawner, the WPS and
tile services) as a subprocess and a Dask LocalCluster in this process, unless a
scheduler is configured. The scheduler address reaches the hub, the services and
users' servers as ``GEOPORTAL_DASK__SCHEDULER``. All state lives in the settings'
``state_dir`` and ``storage_root``, so a second ``geoportal up`` finds users and
their data again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from geoportal.cli.common import reports_errors, settings_from
from geoportal.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
HUB_CONFIG = REPO / "hub" / "jupyterhub_config.py"


def _start_dask(settings: Any) -> tuple[Any, str, str | None]:
    """(cluster or None, scheduler address, dashboard link)."""
    if settings.dask.scheduler:
        return None, settings.dask.scheduler, None
    from distributed import LocalCluster

    from geoportal.hostmemory import dask_worker_environment

    with dask_worker_environment():
        cluster = LocalCluster(
            n_workers=settings.dask.n_workers,
            threads_per_worker=settings.dask.threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=f"127.0.0.1:{settings.dask.dashboard_port}",
            resources={"GPU": settings.dask.gpus_per_worker}
            if settings.dask.gpus_per_worker
            else None,
        )
    return cluster, cluster.scheduler_address, cluster.dashboard_link


def register(app: typer.Typer) -> None:
    @app.command("up")
    @reports_errors
    def up(
        ctx: typer.Context,
        port: int = typer.Option(None, help="Public port of the hub (default: hub.port, 8000)."),
        host: str = typer.Option(None, help="Interface to bind (default: hub.host, loopback)."),
    ) -> None:
        """Run JupyterHub, the WPS service and Dask on this machine until Ctrl-C."""
        from geoportal.services import ManagedProcess, banner, port_is_free, wait_http

        settings = settings_from(ctx)
        updates = {k: v for k, v in (("port", port), ("host", host)) if v is not None}
        if updates:
            settings = settings.model_copy(update={"hub": settings.hub.model_copy(update=updates)})
        bind = settings.hub.host
        if not port_is_free(settings.hub.port, "127.0.0.1" if bind in ("", "0.0.0.0") else bind):
            raise ConfigError(
                f"port {settings.hub.port} is busy: is geoportal already running? "
                "Choose another with --port",
                field="port",
            )
        state = Path(settings.state_dir)
        logs = state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        storage_root = Path(settings.storage_root)
        (storage_root / "datasets").mkdir(parents=True, exist_ok=True)

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

        typer.echo("starting Dask ...")
        cluster, scheduler, dashboard = _start_dask(settings)
        hub = None
        try:
            env = dict(os.environ) | {
                "GEOPORTAL_STORAGE": str(storage_root),
                "GEOPORTAL_STATE_DIR": str(state),
                "GEOPORTAL_HUB__PORT": str(settings.hub.port),
                "GEOPORTAL_HUB__HOST": settings.hub.host,
                "GEOPORTAL_DASK__SCHEDULER": scheduler,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            typer.echo("starting JupyterHub ...")
            hub = ManagedProcess(
                "jupyterhub",
                [sys.executable, "-m", "jupyterhub", "-f", str(HUB_CONFIG)],
                env,
                logs / "jupyterhub.log",
                cwd=state,
            ).start()
            from geoportal_hub.config import public_hub_url, shared_password

            hub_url = public_hub_url(settings)
            ready = False
            while not stop.is_set() and hub.running() and not ready:
                ready = wait_http(f"{hub_url}/hub/health", timeout=1.0)
            if not ready:
                if not stop.is_set():
                    raise ConfigError(
                        f"JupyterHub did not start; see {logs / 'jupyterhub.log'}", field="hub"
                    )
                return
            wait_http(f"{hub_url}/services/wps/healthz", timeout=30)
            login = (
                f"any user name, password {shared_password(settings)} "
                f"(kept in {state / 'hub' / 'password'})"
                if settings.hub.authenticator == "local-password"
                else "any user name and password (dummy authenticator: tests only)"
            )
            datasets_empty = not any((storage_root / "datasets").iterdir())
            typer.echo(
                banner(
                    hub_url=hub_url,
                    wps_url=f"{hub_url}/services/wps/wps",
                    dask_dashboard=dashboard,
                    dask_scheduler=scheduler,
                    storage_root=storage_root,
                    login=login,
                    logs=logs,
                    datasets_empty=datasets_empty,
                )
            )
            while not stop.is_set() and hub.running():
                stop.wait(0.5)
            if not hub.running() and not stop.is_set():
                typer.echo(f"JupyterHub exited; see {logs / 'jupyterhub.log'}", err=True)
        finally:
            typer.echo("stopping ...")
            if hub is not None:
                hub.stop(timeout=8)
            if cluster is not None:
                cluster.close(timeout=5)
            typer.echo("stopped.")
