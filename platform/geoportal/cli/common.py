"""What every command shares: settings loading and error reporting."""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from geoportal.errors import GeoportalError
from geoportal.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_from(ctx: typer.Context) -> Settings:
    """The settings loaded once by the top-level callback."""
    obj = ctx.find_root().obj
    if isinstance(obj, Settings):
        return obj
    settings = load_settings()
    ctx.find_root().obj = settings
    return settings


def current_user() -> str:
    """The local user the CLI acts for: ``$GEOPORTAL_USER``, else the login name."""
    return os.environ.get("GEOPORTAL_USER") or getpass.getuser()


def reports_errors(func: F) -> F:
    """Turn deliberate library errors into a one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeoportalError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            typer.secho(f"error{where}: {exc.message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
