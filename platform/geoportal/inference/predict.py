"""Run a model (or a gallery) over a whole scene: the one-scene pipeline.

:func:`run_inference` checks every input before any work starts, cuts the
scene into blocks of tiles, computes the blocks that are not finished yet
(in this process with :class:`~geoportal.inference.engine.BlockEngine`, or on
Dask workers with :mod:`geoportal.inference.distributed`), then assembles the
per-block part files into the output COGs and writes the ``stats`` JSON.
The CLI (``geoportal infer``), the WPS process ``run-inference`` and the
notebooks all call it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoportal.atomic import atomic_write_text
from geoportal.errors import InvalidInputError
from geoportal.hostmemory import keep_freed_memory
from geoportal.inference.blocks import Block, block_tiles_for, plan_blocks
from geoportal.inference.config import InferenceConfig
from geoportal.inference.engine import BlockEngine, RunGeometry, make_geometry
from geoportal.inference.resume import (
    PartsStore,
    file_fingerprint,
    fingerprint,
    parts_folder_for,
)
from geoportal.inference.source import Predictor, load_predictor, model_files
from geoportal.inference.stats import InferenceStats, StageTimer, make_stats
from geoportal.inference.writer import RasterGrid, write_cog
from geoportal.raster import SceneInfo, describe_scene

Progress = Callable[[float, str], None]


@dataclass
class InferenceResult:
    """Where the outputs went and what the run measured."""

    classification: Path
    stats: InferenceStats
    stats_path: Path
    probabilities: Path | None = None
    buckets: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedRun:
    """Everything decided before the first pixel is computed."""

    scene: str
    info: SceneInfo
    predictor: Predictor
    config: InferenceConfig
    geometry: RunGeometry
    blocks: list[Block]
    fingerprint: str


def output_paths(output: Path, config: InferenceConfig, gallery: bool) -> dict[str, Path]:
    """The files a run writes beside the class raster ``output``."""
    stem = output.with_suffix("")
    paths = {"classification": output, "stats": Path(f"{stem}_stats.json")}
    if config.probabilities != "none":
        name = "confidence" if config.probabilities == "confidence" else "probabilities"
        paths["probabilities"] = Path(f"{stem}_{name}.tif")
    if gallery and config.bucket_raster:
        paths["buckets"] = Path(f"{stem}_buckets.tif")
    return paths


def check_bands(scene: SceneInfo, predictor: Predictor) -> None:
    """Refuse a model whose band count differs from the scene's.

    Raises:
        InvalidInputError: naming both band lists and the fix.
    """
    want = predictor.info.bands
    if scene.count != len(want):
        raise InvalidInputError(
            f"the model expects {len(want)} bands ({', '.join(want)}) but the scene has "
            f"{scene.count} ({', '.join(scene.band_names)}); use a model trained on this "
            "sensor's bands or a scene with the model's bands",
            field="model",
        )


def prepare(
    scene: str | os.PathLike[str],
    model: str | os.PathLike[str],
    config: InferenceConfig | None = None,
) -> PreparedRun:
    """Validate the inputs and plan the run; nothing is computed or written.

    Raises:
        StorageNotFoundError, InvalidRasterError: the scene is missing, unreadable
            or has no CRS; the model is missing.
        InvalidInputError: bands differ; tile size not above the overlap; fp16 on a CPU.
        ResourceUnavailableError: CUDA requested without a GPU.
    """
    config = config or InferenceConfig()
    keep_freed_memory()
    scene = os.fspath(scene)
    info = describe_scene(scene)
    predictor = load_predictor(model, config.device)
    check_bands(info, predictor)
    geometry = make_geometry(info.width, info.height, predictor, config)
    from geoportal.inference.engine import autocast

    autocast(predictor.device, config.precision)
    block_tiles = config.block_tiles or block_tiles_for(config.tile_size)
    blocks = plan_blocks(geometry.grid, block_tiles)
    is_local = Path(scene).exists()
    run_print = fingerprint(
        {
            "scene": file_fingerprint(scene) if is_local else scene,
            "model": [file_fingerprint(f) for f in model_files(model)],
            "config": config.pixel_affecting(),
            "block_tiles": block_tiles,
            "grid": [geometry.grid.tile_size, geometry.grid.overlap, geometry.context],
        }
    )
    return PreparedRun(scene, info, predictor, config, geometry, blocks, run_print)


def _windows(store: PartsStore, blocks: list[Block], key: str) -> Iterator[tuple[Any, np.ndarray]]:
    for block in blocks:
        arrays, _ = store.load(block, (key,))
        yield block.window, arrays[key]


def run_inference(
    scene: str | os.PathLike[str],
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: InferenceConfig | None = None,
    *,
    dask: Any = None,
    progress: Progress | None = None,
    stats_path: str | os.PathLike[str] | None = None,
) -> InferenceResult:
    """Classify a whole scene into a COG (plus optional probability/bucket rasters).

    Args:
        scene: path or http(s) URL of the scene.
        model: a checkpoint, a training run folder or a gallery folder.
        output: the class raster to write (``.tif``).
        config: tiling, blending, precision and output options.
        dask: ``None`` to compute here, or a
            :class:`~geoportal.inference.distributed.DaskOptions` / ``distributed.Client``
            to compute the blocks on Dask workers.
        progress: called with (fraction, "N/M tiles") as blocks finish.
        stats_path: where to write the stats JSON (default ``<output stem>_stats.json``).

    Returns:
        The output paths and the :class:`InferenceStats`.
    """
    start = time.perf_counter()
    run = prepare(scene, model, config)
    config = run.config
    output = Path(output)
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise InvalidInputError(f"output {output.name} must end in .tif", field="output")
    paths = output_paths(output, config, run.predictor.is_gallery)
    if stats_path is not None:
        paths["stats"] = Path(stats_path)
    store = PartsStore(parts_folder_for(output), run.fingerprint)
    if not config.resume:
        store.remove()
    store.open({"blocks": len(run.blocks), "scene": run.scene})
    pending = [b for b in run.blocks if not store.done(b)]
    resumed = len(run.blocks) - len(pending)
    total_tiles = len(run.geometry.grid)
    done_tiles = sum(b.n_tiles for b in run.blocks if store.done(b))
    timer = StageTimer()

    def on_tiles(n: int) -> None:
        nonlocal done_tiles
        done_tiles += n
        if progress is not None:
            progress(done_tiles / total_tiles, f"{done_tiles}/{total_tiles} tiles")

    if progress is not None:
        progress(done_tiles / total_tiles, f"{done_tiles}/{total_tiles} tiles")
    workers = 1
    if dask is not None:
        from geoportal.inference.distributed import compute_on_dask

        workers = compute_on_dask(
            dask, run.scene, os.fspath(model), config, pending, store, timer, on_tiles
        )
    else:
        engine = BlockEngine(run.scene, run.predictor, config, run.geometry, timer)
        engine.run(pending, lambda b, arrays, meta: store.save(b, arrays, meta), on_tiles)

    agreement = None
    if config.precision != "fp32" and config.agreement_blocks:
        agreement = precision_agreement(run, store, config.agreement_blocks)

    grid = RasterGrid(run.info.width, run.info.height, run.info.crs, _affine(run.info))
    info = run.predictor.info
    tags = {"GEOPORTAL_MODEL": run.predictor.source.name}
    with timer.stage("assemble"):
        write_cog(
            paths["classification"],
            grid,
            _windows(store, run.blocks, "classes"),
            classes=info.class_infos,
            descriptions=["class"],
            tags=tags,
        )
        if "probabilities" in paths:
            count = 1 if config.probabilities == "confidence" else info.num_classes
            names = ["confidence"] if count == 1 else [c.name for c in info.classes]
            write_cog(
                paths["probabilities"],
                grid,
                _windows(store, run.blocks, "probabilities"),
                count=count,
                descriptions=names,
                tags={**tags, "GEOPORTAL_PROBABILITY_SCALE": "254"},
            )
        if "buckets" in paths:
            write_cog(
                paths["buckets"],
                grid,
                _windows(store, run.blocks, "buckets"),
                descriptions=["gallery bucket"],
                tags=tags,
            )
        valid = sum(int(store.load(b, ())[1].get("valid_pixels", 0)) for b in run.blocks)
    if not config.keep_parts:
        store.remove()
    seconds = time.perf_counter() - start
    stats = make_stats(
        pixels=run.info.pixels,
        valid_pixels=valid,
        area_km2=run.info.area_km2,
        seconds=seconds,
        stages=timer.seconds,
        tiles=total_tiles,
        blocks=len(run.blocks),
        blocks_resumed=resumed,
        workers=workers,
        device=run.predictor.device,
        precision=config.precision,
        agreement_vs_fp32=agreement,
        model=os.fspath(model),
        kind=("gallery of " if run.predictor.is_gallery else "") + info.kind,
        extra={
            "tile_size": config.tile_size,
            "overlap": run.geometry.grid.overlap,
            "context": list(run.geometry.context),
            "blend": config.blend if info.kind == "segmentation" else "dense",
            "batch_size": config.batch_size,
            "buckets": len(run.predictor.models),
        },
    )
    atomic_write_text(paths["stats"], json.dumps(stats.model_dump(), indent=2))
    if progress is not None:
        progress(1.0, f"{total_tiles}/{total_tiles} tiles")
    return InferenceResult(
        classification=paths["classification"],
        stats=stats,
        stats_path=paths["stats"],
        probabilities=paths.get("probabilities"),
        buckets=paths.get("buckets"),
    )


def precision_agreement(run: PreparedRun, store: PartsStore, n_blocks: int) -> float:
    """Share of valid pixels of the first ``n_blocks`` blocks whose class equals fp32's."""
    blocks = run.blocks[:n_blocks]
    reference: dict[int, np.ndarray] = {}
    engine = BlockEngine(run.scene, run.predictor, run.config, run.geometry, precision="fp32")
    engine.run(blocks, lambda b, arrays, meta: reference.__setitem__(b.index, arrays["classes"]))
    same = total = 0
    for block in blocks:
        mine = store.load(block, ("classes",))[0]["classes"]
        ref = reference[block.index]
        valid = ref != 255
        same += int((mine[valid] == ref[valid]).sum())
        total += int(valid.sum())
    return round(same / total, 6) if total else 1.0


def _affine(info: SceneInfo) -> Any:
    from affine import Affine

    a, b, c, d, e, f = info.transform
    return Affine(a, b, c, d, e, f)
