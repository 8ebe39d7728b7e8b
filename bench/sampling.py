"""Benchmark of balanced sampling: 1,000,000 samples of 16x16x13 (uint16) in containers.

Builds (once, cached in --dir) a sample set of ``--classes`` classes whose patches
are crops of smooth multi-band fields (sums of random plane waves per band plus
pixel noise, a different field and signature per class), so samples are
spatially correlated like real imagery. Then, with the files in the page
cache (a warm-up read first), it times

* a raw read: every container's array loaded in full with ``numpy.load`` (what
  reading all the containers means to Python code), and, for reference, the
  bare bytes read into one reusable buffer (memcpy speed from the page cache);
* the whole balanced-sampling step (features, clustering, selection.csv,
  report.json, plot.png), exactly as the WPS process and the CLI run it.

The last line printed is time(balanced sampling) / time(raw read with numpy.load);
the goal is <= 2. The ratio to the bytes-only read is printed on the line before.

With ``--cold`` every timed pass starts with the containers evicted from the page
cache (``posix_fadvise(DONTNEED)``), so the raw read and the sampling both read from
the storage, which is the real situation for a million samples on shared network
storage; without it both passes read from memory, where the per-pixel arithmetic of
the features, not I/O, decides the ratio.

Usage: .venv/bin/python bench/sampling.py [--samples 1000000] [--dir /tmp/...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from geoportal.classes import make_classes
from geoportal.containers import ContainerWriter, iter_container_files
from geoportal.samples import ClassModel, Normalisation, SampleSetMeta, write_sample_set_meta
from geoportal.sampling.balanced import BalancedConfig, BalancedSampler

BANDS, PATCH = 13, 16


def smooth_field(rng: np.random.Generator, size: int, signature: np.ndarray) -> np.ndarray:
    """(BANDS, size, size) uint16: a per-band signature plus smooth plane waves and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    common = np.zeros((size, size), np.float32)
    for _ in range(6):  # landscape structure shared by all bands
        fx, fy = rng.uniform(-0.05, 0.05, 2)
        common += rng.uniform(0.3, 1.0) * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    field = np.empty((BANDS, size, size), np.uint16)
    for b in range(BANDS):
        band = signature[b] * (1 + 0.15 * common) + rng.normal(0, 25, (size, size))
        field[b] = np.clip(band, 0, 65535).astype(np.uint16)
    return field


def build(folder: Path, samples: int, classes: int, per_container: int) -> None:
    marker = folder / "bench.json"
    want = {"samples": samples, "classes": classes, "bands": BANDS, "patch": PATCH}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    names = {i + 1: f"class{i + 1:02d}" for i in range(classes)}
    # Imbalanced like land cover: class sizes fall off geometrically.
    weights = 0.7 ** np.arange(classes)
    sizes = np.floor(weights / weights.sum() * samples).astype(int)
    sizes[0] += samples - sizes.sum()
    t0 = time.perf_counter()
    for code, name in names.items():
        signature = rng.uniform(300, 6000, BANDS)
        field = smooth_field(rng, 1024, signature)
        view = np.lib.stride_tricks.sliding_window_view(field, (PATCH, PATCH), axis=(1, 2))
        left, part = int(sizes[code - 1]), 0
        while left:
            n = min(per_container, left)
            with ContainerWriter(
                folder / name / f"part-{part:05d}.npy", bands=[f"B{i + 1}" for i in range(BANDS)],
                patch_size=PATCH, dtype="uint16", crs="EPSG:32618", source="generated",
            ) as w:  # fmt: skip
                for start in range(0, n, 8192):
                    m = min(8192, n - start)
                    r = rng.integers(0, 1024 - PATCH, m)
                    c = rng.integers(0, 1024 - PATCH, m)
                    patches = np.ascontiguousarray(view[:, r, c].transpose(1, 0, 2, 3))
                    windows = np.column_stack([c, r, np.full(m, PATCH), np.full(m, PATCH)])
                    w.extend(patches, windows, np.full(m, code))
            left -= n
            part += 1
    meta = SampleSetMeta(
        mode="patch", bands=[f"B{i + 1}" for i in range(BANDS)], patch_size=PATCH,
        dtype="uint16", crs="EPSG:32618",
        classes=[ClassModel(code=c.code, name=c.name, color=c.color) for c in make_classes(names)],
        normalisation=Normalisation(mean=[0.0] * BANDS, std=[1.0] * BANDS),
        counts={names[i + 1]: int(s) for i, s in enumerate(sizes)},
    )  # fmt: skip
    write_sample_set_meta(folder, meta)
    marker.write_text(json.dumps(want))
    print(f"built {samples:,} samples in {time.perf_counter() - t0:.1f} s")


def evict(folder: Path) -> None:
    """Drop the containers' pages from the page cache (no root needed for clean pages)."""
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def raw_load(folder: Path) -> float:
    """Load every container's patch array in full with numpy (no computation); seconds."""
    t0 = time.perf_counter()
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in iter_container_files(cls):
            arr = np.load(path)
            del arr
    return time.perf_counter() - t0


def raw_read(folder: Path) -> tuple[float, int]:
    """Read every container's bytes once into one reusable buffer; return (seconds, bytes)."""
    buf = bytearray(64 << 20)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in iter_container_files(cls):
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    total += n
    return time.perf_counter() - t0, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-container", type=int, default=25_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/geoportal-bench-sampling"))
    ap.add_argument("--n-clusters", type=int, default=10, help="0: automatic (silhouette)")
    ap.add_argument("--threshold", type=int, default=500)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--cold", action="store_true", help="evict the page cache before each pass")
    args = ap.parse_args()
    data = args.dir / "set"
    build(data, args.samples, args.classes, args.per_container)
    # Import time is start-up (a WPS server has these loaded), not part of the step.
    import matplotlib.figure  # noqa: F401
    import sklearn.cluster  # noqa: F401

    prepare = (lambda: evict(data)) if args.cold else (lambda: None)
    raw_read(data)  # warm the page cache (undone per pass by --cold)
    prepare()
    t_raw1, nbytes = raw_read(data)
    prepare()
    t_load1 = raw_load(data)
    cfg = BalancedConfig(
        n_clusters=args.n_clusters or None, threshold=args.threshold, step=args.step
    )
    out = args.dir / "out"
    prepare()
    t0 = time.perf_counter()
    result = BalancedSampler(cfg).run(data, out)
    t_bal = time.perf_counter() - t0
    prepare()
    t_raw2, _ = raw_read(data)
    prepare()
    t_load2 = raw_load(data)
    t_raw = min(t_raw1, t_raw2)
    t_load = min(t_load1, t_load2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rep = result.report_data
    cache = "cold (evicted before each pass)" if args.cold else "warm (page cache)"
    print(f"samples: {rep['samples']:,} in {args.classes} classes, {nbytes / 1e9:.2f} GB, {cache}")
    rate = nbytes / t_raw / 1e9
    print(f"bytes read (readinto, memcpy speed): {t_raw:.2f} s ({rate:.2f} GB/s)")
    rate = nbytes / t_load / 1e9
    print(f"raw read (numpy load of every container): {t_load:.2f} s ({rate:.2f} GB/s)")
    print(f"balanced sampling: {t_bal:.2f} s, selected {rep['selected']:,}, peak RSS {peak:.0f} MB")
    print(f"ratio to the bytes-only read: {t_bal / t_raw:.2f}")
    print(f"{t_bal / t_load:.2f}")


if __name__ == "__main__":
    main()
