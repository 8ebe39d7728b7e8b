"""``geoportal wps --port P``: the WPS service alone, for GIS clients and development.

It serves as the single local user (``$GEOPORTAL_USER`` or the login name) and
binds to loopback unless a token is configured (``--token`` or
``GEOPORTAL_WPS_TOKEN``), which every request must then carry.
"""

from __future__ import annotations

import os

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("wps")
    @reports_errors
    def wps(
        ctx: typer.Context,
        port: int = typer.Option(None, help="Port (default: wps.port, 5000)."),
        host: str = typer.Option(None, help="Interface (default: wps.host, 127.0.0.1)."),
        token: str = typer.Option(
            None, envvar="GEOPORTAL_WPS_TOKEN", help="Require 'Authorization: token <this>'."
        ),
    ) -> None:
        """Serve the WPS endpoint at http://HOST:PORT/wps until Ctrl-C."""
        import logging

        from wps_processes.app import LocalAuth, check_standalone_bind, create_app, serve

        settings = settings_from(ctx)
        updates = {k: v for k, v in (("port", port), ("host", host)) if v is not None}
        if updates:
            settings = settings.model_copy(update={"wps": settings.wps.model_copy(update=updates)})
        check_standalone_bind(settings.wps.host, token)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        user = current_user()
        app_ = create_app(settings, auth=LocalAuth(user, token))
        typer.echo(
            f"WPS for user {user} at http://{settings.wps.host}:{settings.wps.port}/wps "
            f"(outputs under {settings.storage_root}/users/{user}/runs); Ctrl-C stops it"
        )
        os.environ.setdefault("GEOPORTAL_USER", user)
        serve(app_, settings.wps.host, settings.wps.port)
