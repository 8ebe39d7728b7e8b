"""The top-level ``geoportal`` Typer app; command groups register here."""

from __future__ import annotations

from pathlib import Path

import typer

from geoportal.errors import GeoportalError
from geoportal.settings import load_settings

app = typer.Typer(
    name="geoportal",
    help="Geoportal: remote-sensing machine learning on JupyterHub, WPS and one shared storage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", envvar="GEOPORTAL_CONFIG", help="Settings YAML file.", show_default=False
    ),
) -> None:
    try:
        ctx.obj = load_settings(config)
    except GeoportalError as exc:
        typer.secho(f"error [{exc.field}]: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _register() -> None:
    # Every module geoportal/cli/<name>_cmd.py defines `register(app)`; adding a
    # command group is adding such a module.
    import importlib
    import pkgutil

    import geoportal.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"geoportal.cli.{info.name}").register(app)


_register()


def main() -> None:
    app()
