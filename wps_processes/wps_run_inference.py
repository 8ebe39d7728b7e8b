"""WPS process ``run-inference``: classify a whole scene with a model or a gallery."""

from __future__ import annotations

from typing import Any

from pywps import FORMATS

from geoportal.inference import InferenceConfig, run_inference
from geoportal.inference.distributed import DaskOptions
from wps_processes.base import (
    GeoportalProcess,
    JobContext,
    literal_input,
    path_input,
    reference_output,
)


class RunInference(GeoportalProcess):
    identifier = "run-inference"
    title = "Run inference over a scene"
    abstract = (
        "Classifies every pixel of `raster` with `model` (a checkpoint, a training run folder or "
        "a gallery folder) into a single-band COG (class codes, nodata 255, colour table and "
        "class names), tile by tile with blended overlaps, and writes the run's stats (pixels, "
        "km², Mpx/s, km²/s, seconds per stage). Progress counts tiles. Optionally runs the "
        "blocks on the configured Dask cluster."
    )
    example_inputs = {
        "raster": "datasets/lsat7_2000_6band.tif",
        "model": "{train-model:model}",
        "tile_size": "256",
    }

    def make_inputs(self) -> list[Any]:
        return [
            path_input("raster", "Scene", "Storage path or http(s) URL of the scene."),
            path_input("model", "Model", "Checkpoint (.pt), training run folder or gallery."),
            literal_input("tile_size", "Tile size", "Tile core size in pixels.",
                          data_type="integer", default=512),
            literal_input("overlap", "Overlap",
                          "Context pixels per tile side (-1: min(32, tile_size/4)).",
                          data_type="integer", default=-1),
            literal_input("blend", "Blend", "cosine or crop.", default="cosine",
                          allowed_values=["cosine", "crop"]),
            literal_input("batch_size", "Batch size", "Tiles per forward pass.",
                          data_type="integer", default=8),
            literal_input("precision", "Precision", "fp32, bf16 (CPU with AMX, GPU) or fp16 (GPU).",
                          default="fp32", allowed_values=["fp32", "bf16", "fp16"]),
            literal_input("probabilities", "Probabilities",
                          "none, confidence (winning probability) or all (one band per class); "
                          "written beside the classification.",
                          default="none", allowed_values=["none", "confidence", "all"]),
            literal_input("bucket_raster", "Bucket raster",
                          "Galleries: also write which bucket's model made each tile.",
                          data_type="boolean", default=False),
            literal_input("use_dask", "Use Dask",
                          "Compute blocks on the configured Dask cluster (a LocalCluster when "
                          "none is configured).", data_type="boolean", default=False),
            literal_input("workers", "Workers", "LocalCluster workers (0: the settings' count).",
                          data_type="integer", default=0),
        ]  # fmt: skip

    def make_outputs(self) -> list[Any]:
        return [
            reference_output("classification", "Classification", [FORMATS.GEOTIFF]),
            reference_output("stats", "Stats", [FORMATS.JSON]),
        ]

    def run(self, ctx: JobContext, request: Any, response: Any) -> None:
        raster = ctx.input_path(request, "raster", raster=True)
        model = ctx.input_path(request, "model")
        overlap = ctx.literal(request, "overlap", -1)
        config = InferenceConfig(
            tile_size=ctx.literal(request, "tile_size", 512),
            overlap=None if overlap < 0 else overlap,
            blend=ctx.literal(request, "blend", "cosine"),
            batch_size=ctx.literal(request, "batch_size", 8),
            precision=ctx.literal(request, "precision", "fp32"),
            probabilities=ctx.literal(request, "probabilities", "none"),
            bucket_raster=ctx.literal(request, "bucket_raster", False),
            device=ctx.settings.device.value,
        )
        dask = None
        if ctx.literal(request, "use_dask", False):
            d = ctx.settings.dask
            dask = DaskOptions(
                address=d.scheduler, n_workers=ctx.literal(request, "workers", 0) or d.n_workers,
                threads_per_worker=d.threads_per_worker, gpus_per_worker=d.gpus_per_worker,
                gpus_per_task=1 if d.gpus_per_worker else 0,
            )  # fmt: skip
        result = run_inference(
            raster, model, ctx.output_path("classification.tif"), config, dask=dask,
            progress=ctx.progress_callback(response, 2, 98),
            stats_path=ctx.output_path("stats.json"),
        )  # fmt: skip
        ctx.set_output(response, "classification", result.classification)
        ctx.set_output(response, "stats", result.stats_path)


PROCESSES = [RunInference]
