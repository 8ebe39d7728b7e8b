"""``geoportal tiles``: serve web-map tiles of storage scenes on this machine."""

from __future__ import annotations

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("tiles")
    @reports_errors
    def tiles(
        ctx: typer.Context,
        port: int = typer.Option(8091, "--port", help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface (loopback by default)."),
        user: str = typer.Option("", "--user", help="Act for this user (default: you)."),
        token: str = typer.Option(
            "", "--token", envvar="GEOPORTAL_TILES_TOKEN", help="Require this shared token."
        ),
        prefix: str = typer.Option("/", "--prefix", help="URL prefix of every route."),
    ) -> None:
        """Serve PNG tiles (…/tiles/{z}/{x}/{y}.png?scene=…) for one user, until Ctrl-C."""
        import asyncio

        from geoportal.storage import storage_from_settings

        # The app lives beside the hub glue (Tornado); the core stays free of web code.
        from geoportal_hub.tileservice import make_app, serve

        storage = storage_from_settings(settings_from(ctx))
        app_ = make_app(storage, prefix=prefix, user=user or current_user(), token=token or None)
        asyncio.run(serve(app_, host, port))
