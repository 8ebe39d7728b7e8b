"""Benchmark: accuracy check of a 100 Mpx classification against its reference.

Generates (once, cached in --workdir) two 10000 x 10000 uint8 tiled GeoTIFFs on
one grid: a classification (smooth class regions, 8 classes, a nodata corner)
and a label raster with realistic sparsity (about 12 % of the pixels labelled,
in blobs, 0 = no label) that disagrees with the classification on about 15 %
of its labels. Then it measures:

1. The confusion computation on 1e7 labelled pixel pairs already in memory:
   numpy bincount + fold + PyCM from the matrix (our path) versus PyCM fed with
   the same two 1e7-item vectors (measured, not extrapolated; ours best of
   three, PyCM once). Printed as the speed-up (goal >= 25x).
2. For scale only: PyCM fed with *all* 1e8 pixels of the scene is not run (it
   would need ~3.2 GB and minutes); its time is extrapolated linearly from the
   1e7 measurement (PyCM's vector path is a per-item Python loop, linear in the
   items) and printed as such.
3. The whole check (``assess_accuracy``: open and check both inputs, read and
   count every strip, match classes, PyCM statistics) versus a raw read of both
   rasters (every strip of both, one thread, no processing). The ratio is the
   LAST line (goal <= 2.5). Writing the three files (JSON, PyCM's HTML, the
   matplotlib PNG) is a fixed cost of a few tenths of a second whatever the
   raster size; it is timed and printed separately, with the ratio including it.

Usage: ``.venv/bin/python bench/accuracy.py [--size 10000] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from geoportal.accuracy import assess_accuracy, write_assessment
from geoportal.accuracy.confusion import accumulate, strip_windows
from geoportal.accuracy.inputs import Grid
from geoportal.classes import classes_to_json, make_classes

N_CLASSES = 8
NAMES = ["water", "forest", "cropland", "urban", "bare", "wetland", "grass", "shrub"]


def _profile(size: int, nodata: int | None) -> dict:
    return {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "width": size,
        "height": size,
        "crs": "EPSG:32618",
        "transform": from_origin(400000, 4200000, 10, 10),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }


def generate(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the classification and the reference (cached by size and seed)."""
    cls_path = folder / f"classification_{size}_{seed}.tif"
    ref_path = folder / f"reference_{size}_{seed}.tif"
    if cls_path.exists() and ref_path.exists():
        return cls_path, ref_path
    rng = np.random.default_rng(seed)
    cell = 64
    cells = -(-size // cell)
    coarse = rng.integers(1, N_CLASSES + 1, size=(cells, cells), dtype=np.uint8)
    blobs = rng.random((cells * 4, cells * 4)) < 0.12  # labelled 16-px blobs, ~12 % of pixels
    classes = json.dumps(classes_to_json(make_classes(dict(enumerate(NAMES, 1)))))
    folder.mkdir(parents=True, exist_ok=True)
    tmp_c, tmp_r = cls_path.with_suffix(".part.tif"), ref_path.with_suffix(".part.tif")
    with (
        rasterio.open(tmp_c, "w", **_profile(size, 255)) as dc,
        rasterio.open(tmp_r, "w", **_profile(size, None)) as dr,
    ):
        dc.update_tags(GEOPORTAL_CLASSES=classes)
        step = 512
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            rows = np.arange(r0, r0 + h)
            truth = np.repeat(coarse[rows // cell], cell, axis=1)[:, :size]
            # Ragged region borders: shift each row's class lookup by a little noise.
            jitter = rng.integers(-6, 7, size=(h, 1))
            cols = np.clip(np.arange(size)[None, :] + jitter, 0, size - 1)
            truth = np.take_along_axis(truth, cols, axis=1)
            pred = truth.copy()
            wrong = rng.random(pred.shape) < 0.15
            pred[wrong] = rng.integers(1, N_CLASSES + 1, size=int(wrong.sum()), dtype=np.uint8)
            if r0 < size // 10:
                pred[:, : size // 10] = 255  # a nodata corner, as along a scene edge
            label_here = np.repeat(blobs[rows // 16], 16, axis=1)[:, :size]
            ref = np.where(label_here, truth, 0).astype(np.uint8)
            window = rasterio.windows.Window(0, r0, size, h)
            dc.write(pred, 1, window=window)
            dr.write(ref, 1, window=window)
    os.replace(tmp_c, cls_path)
    os.replace(tmp_r, ref_path)
    return cls_path, ref_path


def raw_read(paths: list[Path]) -> float:
    """Seconds to read every strip of each raster once (one thread, no processing)."""
    start = time.perf_counter()
    for path in paths:
        with rasterio.open(path) as ds:
            grid = Grid.of(ds)
            for window in strip_windows(grid, ds.block_shapes[0], 4_000_000):
                ds.read(1, window=window)
    return time.perf_counter() - start


def labelled_pairs(cls_path: Path, ref_path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` labelled pixels with a prediction, as two uint8 vectors."""
    refs, preds, have = [], [], 0
    with rasterio.open(cls_path) as dc, rasterio.open(ref_path) as dr:
        for window in strip_windows(Grid.of(dc), dc.block_shapes[0], 4_000_000):
            r = dr.read(1, window=window)
            p = dc.read(1, window=window)
            keep = (r != 0) & (p != 255)
            refs.append(r[keep])
            preds.append(p[keep])
            have += int(keep.sum())
            if have >= n:
                break
    ref, pred = np.concatenate(refs)[:n], np.concatenate(preds)[:n]
    if ref.size < n:
        raise SystemExit(f"only {ref.size} labelled pixels; use a larger --size")
    return ref, pred


def ours_from_vectors(ref: np.ndarray, pred: np.ndarray) -> tuple[float, object]:
    """Our path on in-memory pairs: bincount, fold to K x K, PyCM from the matrix."""
    from pycm import ConfusionMatrix

    start = time.perf_counter()
    hist = np.zeros(256 * 256, dtype=np.int64)
    accumulate(hist, ref, pred)
    table = hist.reshape(256, 256)
    codes = sorted(set(np.flatnonzero(table.sum(1))) | set(np.flatnonzero(table.sum(0))))
    matrix = {str(a): {str(p): int(table[a, p]) for p in codes} for a in codes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cm = ConfusionMatrix(matrix=matrix)
        cm.overall_stat  # noqa: B018
    return time.perf_counter() - start, cm


def pycm_from_vectors(ref: np.ndarray, pred: np.ndarray) -> tuple[float, object]:
    from pycm import ConfusionMatrix

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cm = ConfusionMatrix(actual_vector=ref, predict_vector=pred)
    return time.perf_counter() - start, cm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="raster side in pixels")
    parser.add_argument("--pairs", type=int, default=10_000_000, help="pixels for the PyCM race")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "geoportal-bench-accuracy"
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    cls_path, ref_path = generate(args.workdir, args.size)
    print(
        f"data: {args.size}x{args.size} px ({args.size**2 / 1e6:.0f} Mpx) x 2 rasters, "
        f"ready in {time.perf_counter() - t0:.1f} s ({args.workdir})"
    )

    ref, pred = labelled_pairs(cls_path, ref_path, args.pairs)
    import pycm  # noqa: F401 - import outside the timings

    t_ours, cm_ours = min((ours_from_vectors(ref, pred) for _ in range(3)), key=lambda r: r[0])
    t_pycm, cm_pycm = pycm_from_vectors(ref, pred)
    same = abs(cm_ours.Overall_ACC - cm_pycm.Overall_ACC) < 1e-12  # type: ignore[attr-defined]
    print(
        f"{ref.size:.0e} labelled px in memory: bincount + PyCM(matrix) {t_ours:.3f} s, "
        f"PyCM(vectors) {t_pycm:.2f} s (measured), same Overall ACC: {same}"
    )
    del ref, pred, cm_pycm

    raw_read([cls_path, ref_path])  # warm the page cache for every timing
    out = args.workdir / "out"
    reads, checks, writes = [], [], []
    for _ in range(3):  # interleaved, best of three: the machine may be shared
        reads.append(raw_read([cls_path, ref_path]))
        start = time.perf_counter()
        assessment = assess_accuracy(cls_path, ref_path)
        checks.append(time.perf_counter() - start)
        start = time.perf_counter()
        write_assessment(assessment, out)
        writes.append(time.perf_counter() - start)
    t_read, t_check, t_write = min(reads), min(checks), min(writes)
    px = args.size**2
    print(f"raw read of both rasters: {t_read:.2f} s (every strip, one thread)")
    print(f"whole check of {px / 1e6:.0f} Mpx: {t_check:.2f} s: {assessment.summary()}")
    print(
        f"writing report.json + PyCM HTML + PNG: {t_write:.2f} s (fixed cost, independent of "
        f"the raster size); check + files / raw read = {(t_check + t_write) / t_read:.2f}"
    )
    extrapolated = t_pycm * px / args.pairs
    print(
        f"PyCM fed all {px:.0e} px as vectors: ~{extrapolated:.0f} s + the read, extrapolated "
        f"linearly from the {args.pairs:.0e} px measurement (not run: ~{px * 32 / 1e9:.1f} GB); "
        f"the whole check is ~{(extrapolated + t_read) / t_check:.0f}x faster"
    )
    print(
        f"speed-up over PyCM fed with vectors at {args.pairs:.0e} px: {t_pycm / t_ours:.1f}x "
        "(goal >= 25x)"
    )
    print("time(whole check)/time(raw read of both rasters) (goal <= 2.5):")
    print(f"{t_check / t_read:.2f}")


if __name__ == "__main__":
    main()
