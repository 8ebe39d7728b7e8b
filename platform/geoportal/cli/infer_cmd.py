"""``geoportal infer RASTER MODEL``: classify a whole scene into a COG."""

from __future__ import annotations

from pathlib import Path

import typer

from geoportal.cli.common import current_user, reports_errors, settings_from


def register(app: typer.Typer) -> None:
    @app.command("infer")
    @reports_errors
    def infer_command(
        ctx: typer.Context,
        raster: str = typer.Argument(..., help="Scene: local path, storage path or http(s) URL."),
        model: str = typer.Argument(
            ..., help="Checkpoint (.pt), training run folder, or gallery folder."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Class raster to write (default: <raster stem>_classes.tif here)."
        ),
        tile_size: int = typer.Option(512, "--tile-size", help="Tile core size in pixels."),
        overlap: int | None = typer.Option(
            None,
            "--overlap",
            help="Context pixels around each tile (default min(32, tile size / 4)).",
        ),
        blend: str = typer.Option("cosine", "--blend", help="cosine or crop."),
        batch_size: int = typer.Option(8, "--batch-size", help="Tiles per forward pass."),
        precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (GPU)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        probabilities: str = typer.Option(
            "none", "--probabilities", help="none, confidence or all."
        ),
        buckets: bool = typer.Option(False, "--buckets", help="Gallery: write the bucket raster."),
        patch_stride: int = typer.Option(1, "--patch-stride", help="Patch models: stride."),
        workers: int = typer.Option(
            0, "--workers", help="Run on a Dask LocalCluster with N workers (0: this process)."
        ),
        dask: str | None = typer.Option(
            None,
            "--dask",
            help="Dask scheduler address (tcp://…) or gateway://…; "
            "default: the dask.scheduler setting when --workers is not given.",
        ),
        gpus_per_task: int = typer.Option(0, "--gpus-per-task", help="Dask GPU resource per task."),
        user: str | None = typer.Option(None, "--user", help="Act for this user."),
    ) -> None:
        """Classify RASTER with MODEL; prints progress, the outputs and the stats."""
        from geoportal.inference import InferenceConfig, run_inference
        from geoportal.inference.distributed import DaskOptions
        from geoportal.storage import storage_from_settings

        settings = settings_from(ctx)
        who = user or current_user()
        storage = storage_from_settings(settings)

        def resolve(location: str, field: str) -> str:
            local = Path(location).expanduser()
            if local.exists() and not local.resolve().is_relative_to(storage.root.resolve()):
                return str(local)
            return storage.resolve_input(who, location, field=field)

        scene = resolve(raster, "raster")
        model_path = resolve(model, "model")
        output = out or Path.cwd() / f"{Path(raster).stem}_classes.tif"
        config = InferenceConfig(
            tile_size=tile_size,
            overlap=overlap,
            blend=blend,
            batch_size=batch_size,  # type: ignore[arg-type]
            precision=precision,
            device=device,
            probabilities=probabilities,  # type: ignore[arg-type]
            bucket_raster=buckets,
            patch_stride=patch_stride,
        )
        options = None
        address = dask if dask is not None else ("" if workers else settings.dask.scheduler)
        if workers or address:
            options = DaskOptions(
                address=address,
                n_workers=workers or settings.dask.n_workers,
                threads_per_worker=settings.dask.threads_per_worker,
                gpus_per_worker=settings.dask.gpus_per_worker,
                gpus_per_task=gpus_per_task,
            )

        def progress(fraction: float, message: str) -> None:
            typer.echo(f"[{100 * fraction:5.1f}%] {message}")

        result = run_inference(scene, model_path, output, config, dask=options, progress=progress)
        typer.echo(f"classification: {result.classification}")
        for name in ("probabilities", "buckets"):
            if getattr(result, name) is not None:
                typer.echo(f"{name}: {getattr(result, name)}")
        s = result.stats
        typer.echo(
            f"stats: {result.stats_path} ({s.mpx_per_s} Mpx/s, {s.km2_per_s} km²/s, "
            f"{s.seconds} s, {s.workers} worker(s))"
        )
