"""``geoportal gallery build``: a RESFlow-style gallery of per-bucket models."""

from __future__ import annotations

from pathlib import Path

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from

gallery_app = typer.Typer(help="Model galleries: one model per bucket of similar tiles.")


def register(app: typer.Typer) -> None:
    app.add_typer(gallery_app, name="gallery")


@gallery_app.command("build")
@reports_errors
def build_command(
    ctx: typer.Context,
    raster: str = typer.Argument(..., help="Scene whose tiles are bucketed (the samples' scene)."),
    samples: str = typer.Argument(..., help="Sample-set folder cut from RASTER."),
    config: Path = typer.Argument(..., help="Training configuration (YAML or JSON)."),
    name: str = typer.Option(..., "--name", help="Gallery name: users/<user>/models/<name>/."),
    k: int = typer.Option(4, "--k", help="Number of buckets."),
    tile_size: int = typer.Option(256, "--tile-size", help="Tile size of the features."),
    min_samples: int = typer.Option(
        50, "--min-samples", help="Buckets with fewer samples use the global model."
    ),
    user: str | None = typer.Option(None, "--user", help="Act for this user."),
) -> None:
    """Cluster RASTER's tiles into K buckets and train one model per bucket."""
    from geoportal.inference.gallery import build_gallery
    from geoportal.storage import storage_from_settings
    from geoportal.training import load_config
    from geoportal.training.runs import check_run_name

    who = user or current_user()
    storage = storage_from_settings(settings_from(ctx))
    storage.ensure_layout(who)

    def resolve(location: str, field: str) -> Path:
        local = Path(location).expanduser()
        if local.exists() and not local.resolve().is_relative_to(storage.root.resolve()):
            return local
        return storage.resolve(who, location, must_exist=True, field=field)

    out = storage.resolve(
        who, f"users/{who}/models/{check_run_name(name)}", write=True, field="name"
    )
    folder = build_gallery(
        resolve(raster, "raster"),
        resolve(samples, "samples"),
        out,
        load_config(config),
        k=k,
        tile_size=tile_size,
        min_samples=min_samples,
        progress=lambda f, m: typer.echo(f"[{100 * f:5.1f}%] {m}"),
    )
    typer.echo(f"gallery: {folder}")
