"""Benchmark whole-scene inference on a large mosaic of the real NC Landsat 7 scene.

The scene (default 8192 × 8192 px, 6 bands, uint8 DN, nodata 0) is built by
mirror-tiling the real 489 × 443 NC Landsat 7 bands (reflections keep every
seam continuous), written once as a tiled DEFLATE GeoTIFF into ``--cache``.
The model has random weights (speed does not depend on them); by default it is
the U-Net that ``geoportal train`` builds (base 16 channels, depth 3). A smaller
model (``--args '{"base_channels": 4, "depth": 2}'``) is the I/O stress case:
on a CPU its forward pass is so cheap that decoding the scene takes a sizeable
share of the same cores (see docs/inference.md).

Prints the time of every pipeline stage, the pure forward throughput of the same
model and batch shape (timed just before and just after the pipeline run, and
averaged), the end-to-end throughput, and as the LAST line the ratio
end-to-end / pure forward (goal ≥ 0.9). ``--workers N`` also runs the
scene on a Dask LocalCluster with N workers and prints the scaling ratio
(distributed / single-process throughput) before the last line.
``--writers`` measures the two ways workers can write blocks (per-block part
files + assembly, which we use, vs. one shared GeoTIFF under a lock).

Usage: .venv/bin/python bench/inference.py [--size 8192] [--workers 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
NC = Path(os.environ.get("GEOPORTAL_SHARED_DATA", REPO.parent / "shared" / "data")) / (
    "nc_landsat7/lsat7_2000_6band.tif"
)


def mosaic_scene(path: Path, size: int) -> Path:
    """Mirror-tile the real NC bands into a ``size`` × ``size`` uint8 scene."""
    if path.exists():
        return path
    with rasterio.open(NC) as src:
        data = src.read()
        nodata = src.nodata
        crs, t = src.crs, src.transform
        names = src.descriptions
    valid = ~(data == nodata).any(axis=0)
    dn = np.where(valid, np.clip(data, 1, 255), 0).astype(np.uint8)
    # One period of a reflection: the scene followed by its mirror image.
    period = np.concatenate([dn, dn[:, ::-1]], axis=1)
    period = np.concatenate([period, period[:, :, ::-1]], axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 6, "dtype": "uint8",
        "crs": crs, "transform": Affine(t.a, 0, t.c, 0, t.e, t.f), "nodata": 0,
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "DEFLATE",
        "predictor": 2, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    ph, pw = period.shape[1:]
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.descriptions = names
        for r0 in range(0, size, 1024):
            rows = np.arange(r0, min(r0 + 1024, size)) % ph
            strip = period[:, rows][:, :, np.arange(size) % pw]
            dst.write(strip, window=((r0, r0 + len(rows)), (0, size)))
    tmp.rename(path)
    return path


def make_model(folder: Path, scene: Path, arch: str, args: dict) -> Path:
    import torch

    from geoportal.checkpoint import ModelInfo, save_checkpoint
    from geoportal.models import KINDS, build_model

    torch.manual_seed(0)
    model = build_model(arch, 6, 7, **args)
    with rasterio.open(scene) as ds:
        names = list(ds.descriptions)
    info = ModelInfo(
        architecture=arch,
        arch_args=args,
        kind=KINDS[arch],
        bands=names,  # type: ignore[arg-type]
        normalisation={"mean": [80.0] * 6, "std": [30.0] * 6},
        classes=[{"code": i + 1, "name": f"c{i + 1}", "color": "#336699"} for i in range(7)],
        patch_size=args.get("patch_size", 256),
    )
    return save_checkpoint(folder / f"{arch}.pt", model, info)


def pure_forward(ckpt: Path, config, device: str, seconds: float = 20.0) -> float:
    """Mpx/s of the forward pass alone on batches shaped like the pipeline's."""
    import torch

    from geoportal.hostmemory import keep_freed_memory
    from geoportal.inference.engine import autocast, forward_probs
    from geoportal.inference.source import load_predictor

    keep_freed_memory()  # as run_inference does: both sides measured with the same allocator
    predictor = load_predictor(ckpt, device)
    info = predictor.info
    t = config.tile_size
    if info.kind == "patch":
        side = t + info.patch_size - 1
    else:
        side = t + 2 * (min(32, t // 4) if config.overlap is None else config.overlap)
    x = torch.randn(config.batch_size, 6, side, side)
    model = predictor.models[0].module
    with torch.inference_mode(), autocast(predictor.device, config.precision):

        def run() -> None:
            x_dev = x.to(predictor.device)
            kw = {"kind": info.kind, "patch_size": info.patch_size, "out_hw": (t, t)}
            forward_probs(model, x_dev, stride=config.patch_stride, **kw).float().cpu()

        run()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 3:
            run()
            n += 1
        elapsed = time.perf_counter() - start
    return n * config.batch_size * t * t / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=8192, help="scene side in pixels (≥ 8000)")
    parser.add_argument("--arch", default="unet", help="unet, fcn or patch_cnn")
    parser.add_argument(
        "--args", default="{}", help="architecture arguments (JSON); default: training's default"
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0, help="also run on N Dask workers")
    parser.add_argument("--writers", action="store_true", help="compare block-writing options")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "geoportal-bench"
    )
    opts = parser.parse_args()

    from geoportal.inference import InferenceConfig, run_inference

    scene = mosaic_scene(opts.cache / f"nc_mosaic_{opts.size}.tif", opts.size)
    work = Path(tempfile.mkdtemp(prefix="bench-infer-", dir=opts.cache))
    ckpt = make_model(work, scene, opts.arch, json.loads(opts.args))
    config = InferenceConfig(
        tile_size=opts.tile_size, batch_size=opts.batch_size, precision=opts.precision,
        device=opts.device, keep_parts=opts.writers,
    )  # fmt: skip
    print(f"scene: {scene} ({opts.size}x{opts.size} px, 6 bands, mosaic of the NC Landsat 7 scene)")
    print(
        f"model: {opts.arch} {opts.args}, tile {opts.tile_size}, batch {opts.batch_size}, "
        f"{opts.precision}"
    )
    # The pure forward pass is timed before and after the pipeline run and averaged, so a
    # machine that speeds up or slows down during the run (shared hosts do) moves both sides.
    before = pure_forward(ckpt, config, opts.device, seconds=10.0)
    result = run_inference(scene, ckpt, work / "classes.tif", config)
    after = pure_forward(ckpt, config, opts.device, seconds=10.0)
    forward = (before + after) / 2
    print(f"pure forward: {forward:.3f} Mpx/s (before the run {before:.3f}, after {after:.3f})")
    s = result.stats
    for stage, sec in s.stages.items():
        print(f"stage {stage:9s} {sec:8.2f} s busy")
    print(
        f"end-to-end: {s.seconds:.1f} s, {s.mpx_per_s:.3f} Mpx/s, {s.km2_per_s:.2f} km²/s "
        f"({s.area_km2:.0f} km² at 28.5 m), {s.tiles} tiles in {s.blocks} blocks"
    )
    gsd = 0.5
    print(f"at {gsd} m GSD this is {s.mpx_per_s * 1e6 * gsd * gsd / 1e6:.4f} km²/s")
    if opts.writers:
        measure_writers(result, work)
    if opts.workers:
        from geoportal.inference.distributed import DaskOptions

        dist = run_inference(
            scene,
            ckpt,
            work / "classes_dask.tif",
            config.model_copy(update={"keep_parts": False}),
            dask=DaskOptions(n_workers=opts.workers),
        )
        d = dist.stats
        same = (work / "classes_dask.tif").read_bytes() == (work / "classes.tif").read_bytes()
        print(
            f"dask {opts.workers} workers: {d.seconds:.1f} s, {d.mpx_per_s:.3f} Mpx/s "
            f"(assemble {d.stages['assemble']:.1f} s), identical classes file: {same}"
        )
        print(
            f"scaling ratio ({opts.workers} workers / 1 process): {d.mpx_per_s / s.mpx_per_s:.3f}"
        )
    print(f"end-to-end / pure forward: {s.mpx_per_s / forward:.3f}")


def measure_writers(result, work: Path) -> None:
    """Time the two ways of getting blocks from workers into one COG (I/O only)."""
    from concurrent.futures import ThreadPoolExecutor

    from geoportal.inference.resume import parts_folder_for
    from geoportal.inference.writer import RasterGrid, write_cog

    folder = parts_folder_for(result.classification)
    parts = sorted(folder.glob("block-*.npz"))
    with rasterio.open(result.classification) as ds:
        grid = RasterGrid(ds.width, ds.height, ds.crs.to_string(), ds.transform)
        tile = ds.block_shapes[0][0]
    del tile
    from geoportal.inference.blocks import plan_blocks
    from geoportal.tiling import TileGrid

    cfg = result.stats.extra
    blocks = plan_blocks(
        TileGrid(grid.width, grid.height, cfg["tile_size"], cfg["overlap"]),
        round(4_000_000**0.5 / cfg["tile_size"]) or 1,
    )
    arrays = []
    for p in parts:
        with np.load(p) as z:
            arrays.append(z["classes"])
    # (a) every worker writes its own part file; one pass assembles the COG
    out_a = work / "parts"
    out_a.mkdir()
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: np.save(out_a / f"{i}.npy", arrays[i]), range(len(arrays))))
    t_parts = time.perf_counter() - start
    start = time.perf_counter()
    write_cog(
        work / "a.tif",
        grid,
        ((b.window, np.load(out_a / f"{i}.npy")) for i, b in enumerate(blocks)),
    )
    t_assemble = time.perf_counter() - start
    # (b) workers write windows into one GeoTIFF under a lock, then a COG copy

    lock = threading.Lock()
    start = time.perf_counter()
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "DEFLATE",
    }
    with rasterio.open(work / "shared.tif", "w", **profile) as dst:

        def put(i: int) -> None:
            with lock:
                dst.write(arrays[i][None], window=blocks[i].window)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(put, range(len(arrays))))
    t_locked = time.perf_counter() - start
    start = time.perf_counter()
    rasterio.shutil.copy(work / "shared.tif", work / "b.tif", driver="COG", COMPRESS="DEFLATE")
    t_copy = time.perf_counter() - start
    print(
        f"writers: part files {t_parts:.2f} s (parallel) + assembly to COG {t_assemble:.2f} s; "
        f"locked shared GeoTIFF {t_locked:.2f} s (serialised) + COG copy {t_copy:.2f} s"
    )


if __name__ == "__main__":
    main()
