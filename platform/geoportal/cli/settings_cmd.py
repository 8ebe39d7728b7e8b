"""``geoportal settings``: show the effective settings."""

from __future__ import annotations

import typer

from geoportal.cli.common import settings_from


def register(app: typer.Typer) -> None:
    @app.command("settings")
    def show_settings(ctx: typer.Context) -> None:
        """Print the effective settings as YAML (file, environment and defaults merged)."""
        typer.echo(settings_from(ctx).to_yaml())
