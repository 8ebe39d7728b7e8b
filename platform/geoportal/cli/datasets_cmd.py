"""``geoportal datasets``: add scenes and labelsets to the shared database, list it.

A thin layer over :mod:`geoportal.catalog`: each command parses its options,
calls one library function and prints the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from
from geoportal.errors import AccessDeniedError
from geoportal.storage import Storage, storage_from_settings

if TYPE_CHECKING:
    from geoportal.catalog import CatalogEntry

# geoportal.catalog (pystac, geopandas) is imported inside the commands, so that
# `geoportal --help` stays quick.

datasets_app = typer.Typer(
    help="The shared remote-sensing database (datasets/) and its STAC catalog.",
    no_args_is_help=True,
)


def _storage(ctx: typer.Context) -> Storage:
    return storage_from_settings(settings_from(ctx))


def _writable_storage(ctx: typer.Context) -> Storage:
    """The storage, for commands that write datasets/ (administrators only).

    On one machine (no ``hub.admin_users`` configured) the local user is the
    administrator; with administrators configured, others are refused here as
    they would be by the resolver. File permissions remain the real guard.
    """
    storage = _storage(ctx)
    user = current_user()
    if storage.admins and user not in storage.admins:
        raise AccessDeniedError(
            f"datasets/ is written by administrators only ({', '.join(sorted(storage.admins))}); "
            f"user {user!r} may add labels under users/{user}/labels/ instead",
            field="user",
        )
    return storage


def _bounds(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.10g}" for v in values) + ")" if values else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    rule = "  ".join("-" * w for w in widths)
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    return "\n".join(line.rstrip() for line in [head, rule, *lines])


def _scene_row(entry: CatalogEntry) -> list[str]:
    return [
        entry.name,
        entry.crs if len(entry.crs) < 30 else entry.crs[:27] + "...",
        f"{entry.width}x{entry.height}",
        str(entry.count),
        entry.dtype or "-",
        "-" if entry.nodata is None else f"{entry.nodata:g}",
        _bounds(entry.bounds),
    ]


def _labels_row(entry: CatalogEntry) -> list[str]:
    return [
        entry.name,
        entry.crs,
        str(entry.features),
        entry.class_field or "?",
        ", ".join(f"{c.code}:{c.name}" for c in entry.classes) or "-",
    ]


def _progress(verbose: bool) -> Callable[[float, str], None] | None:
    if not verbose:
        return None
    return lambda fraction, message: typer.echo(f"[{fraction:4.0%}] {message}", err=True)


@datasets_app.command("add")
@reports_errors
def add(
    ctx: typer.Context,
    files: list[Path] = typer.Argument(..., help="Raster files (GeoTIFF or any GDAL raster)."),
    link: bool = typer.Option(
        False, "--link", help="Hard-link instead of copying (same filesystem as the storage)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Overwrite scenes of the same name."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Report progress."),
) -> None:
    """Validate scenes, copy them into datasets/ and catalogue them.

    Each file must open with rasterio, have a CRS and decode completely; one bad
    file refuses the whole command and nothing is copied.
    """
    from geoportal.catalog import add_datasets

    entries = add_datasets(
        _writable_storage(ctx), files, link=link, replace=replace, progress=_progress(verbose)
    )
    for entry in entries:
        typer.echo(
            f"added {entry.path}: {entry.width}x{entry.height} px, {entry.count} bands "
            f"({', '.join(entry.bands)}), {entry.dtype}, {entry.crs}"
        )


@datasets_app.command("add-labels")
@reports_errors
def add_labels_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A GeoPackage, GeoJSON or Shapefile of labels."),
    class_field: str = typer.Option(
        ..., "--class-field", help="The field holding the class (codes or names)."
    ),
    layer: str | None = typer.Option(None, "--layer", help="Layer of a multi-layer file."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a labelset of that name."),
) -> None:
    """Validate a labelset, store it as datasets/labels/<name>.gpkg and catalogue it."""
    from geoportal.catalog import add_labels

    entry = add_labels(_writable_storage(ctx), file, class_field, replace=replace, layer=layer)
    classes = ", ".join(f"{c.code}:{c.name} ({entry.counts.get(c.name, 0)})" for c in entry.classes)
    typer.echo(f"added {entry.path}: {entry.features} features in {entry.crs}; classes {classes}")


@datasets_app.command("list")
@reports_errors
def list_command(ctx: typer.Context) -> None:
    """Show every scene (CRS, size, bands, dtype, bounds) and labelset."""
    from geoportal.catalog import list_datasets

    entries = list_datasets(_storage(ctx))
    scenes = [e for e in entries if e.kind == "scene"]
    labels = [e for e in entries if e.kind == "labels"]
    if not entries:
        typer.echo("datasets/ is empty: add scenes with 'geoportal datasets add FILE...'")
        return
    if scenes:
        header = ["name", "CRS", "size WxH", "bands", "dtype", "nodata", "bounds"]
        typer.echo(_table([_scene_row(e) for e in scenes], header))
    if labels:
        typer.echo("")
        header = ["labels", "CRS", "features", "class field", "classes"]
        typer.echo(_table([_labels_row(e) for e in labels], header))


@datasets_app.command("catalog")
@reports_errors
def catalog_command(
    ctx: typer.Context,
    refresh: bool = typer.Option(
        False, "--refresh", help="Describe every file again, not only new or changed ones."
    ),
) -> None:
    """Rebuild the STAC catalog (datasets/catalog/) from the files under datasets/."""
    from geoportal.catalog import update_catalog

    update = update_catalog(_writable_storage(ctx), refresh=refresh)
    scenes = sum(e.kind == "scene" for e in update.entries)
    typer.echo(
        f"catalogued {scenes} scenes and {len(update.entries) - scenes} labelsets "
        f"in {update.catalog}"
    )
    for path, reason in update.skipped:
        typer.secho(f"skipped {path}: {reason}", fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
