"""Per-sample features for balanced sampling: each band's mean and standard deviation.

The features are computed by streaming over the containers in chunks of a few
hundred samples. A chunk is fetched with a positioned read (``os.preadv``) into
a per-thread buffer rather than through a memory map: the container is a plain
``.npy`` file, so a chunk's offset is known, and this avoids a page fault per
4 KB and keeps the resident memory at two chunks however large the set (mapped
pages would count in the process's RSS). The chunk is converted to float32 once, reduced
to its means, centred in place and reduced again (a two-pass variance, exact
enough in float32 even for uint16 reflectances around 10,000, where the
one-pass ``E[x²] - E[x]²`` would cancel catastrophically). Chunks small enough
to stay in the CPU cache are what makes this about as fast as reading the bytes.
Two worker threads overlap reading (page faults) and reducing; numpy releases
the GIL in both.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoportal.containers import Container
from geoportal.errors import InvalidContainerError

Progress = Callable[[float, str], None]

#: Bytes of float32 work per chunk; small enough to stay in the L2/L3 cache.
CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ContainerInfo:
    """A container's path, sample count, band count, sample shape and nodata value."""

    path: Path
    count: int
    bands: int
    shape: tuple[int, ...]
    nodata: float | None = None


def open_containers(paths: Sequence[str | os.PathLike[str]], what: str) -> list[ContainerInfo]:
    """Open containers, check they are readable and agree on bands and patch size.

    Args:
        paths: the containers' patch files.
        what: a short description quoted in errors (``class 'forest'``).

    Raises:
        InvalidContainerError: a container is unreadable, or its band count or
            patch size differs from the first one's (the error names both files).
    """
    infos: list[ContainerInfo] = []
    for path in paths:
        container = Container(path)
        arr = container.patches  # raises InvalidContainerError with the file name
        nodata = container.meta.get("nodata")
        info = ContainerInfo(
            Path(path),
            int(arr.shape[0]),
            int(arr.shape[1]),
            tuple(arr.shape[1:]),
            None if nodata is None else float(nodata),
        )
        if infos and info.shape != infos[0].shape:
            first = infos[0]
            raise InvalidContainerError(
                f"{what}: container {info.path} holds samples of shape {info.shape} "
                f"(bands, height, width) but {first.path} holds {first.shape}; "
                "all containers of a balanced-sampling run need the same bands and patch size",
                field="samples",
            )
        infos.append(info)
    return infos


def _chunk_features(block: np.ndarray, out: np.ndarray, nodata: float | None) -> None:
    n, c = block.shape[:2]
    x = block.reshape(n, c, -1).astype(np.float32)
    bad = None
    if nodata is not None:
        bad = x == np.float32(nodata)
    if np.issubdtype(block.dtype, np.floating):
        bad = ~np.isfinite(x) if bad is None else bad | ~np.isfinite(x)
    if bad is not None and bad.any():
        # Rare slow path: statistics over the valid pixels only.
        x[bad] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[:, :c] = np.nanmean(x, axis=2)
            out[:, c:] = np.nanstd(x, axis=2)
        return
    mean = x.mean(axis=2, dtype=np.float32)
    x -= mean[..., None]
    var = np.einsum("ijk,ijk->ij", x, x) / np.float32(x.shape[2])
    out[:, :c] = mean
    out[:, c:] = np.sqrt(var)


def sample_features(
    containers: Sequence[ContainerInfo],
    *,
    nodata: float | None = None,
    progress: Progress | None = None,
    threads: int = 2,
) -> np.ndarray:
    """Features of every sample of ``containers``, in container then index order.

    Returns:
        float32 array (N, 2·C): per-band means, then per-band standard deviations.
        Pixels equal to ``nodata`` (default: each container's own nodata value,
        from its metadata) and non-finite pixels are left out of a
        sample's statistics; a band with no valid pixel gives NaN features,
        and callers decide what to do with such samples.
    """
    total = sum(c.count for c in containers)
    if not containers:
        return np.empty((0, 0), np.float32)
    bands = containers[0].bands
    feats = np.empty((total, 2 * bands), np.float32)
    pixels = int(np.prod(containers[0].shape[1:]))
    step = max(1, CHUNK_BYTES // max(1, 4 * bands * pixels))
    jobs: list[tuple[Path, np.dtype, int, int, int, int, float | None]] = []
    offset = 0
    for info in containers:
        header = np.load(info.path, mmap_mode="r")
        dtype, data_offset = header.dtype, int(header.offset)
        del header
        for start in range(0, info.count, step):
            stop = min(start + step, info.count)
            nd = info.nodata if nodata is None else nodata
            jobs.append((info.path, dtype, data_offset, start, stop, offset + start, nd))
        offset += info.count
    shape = containers[0].shape
    local = threading.local()

    def work(job: tuple[Path, np.dtype, int, int, int, int, float | None]) -> int:
        path, dtype, data_offset, start, stop, at, nd = job
        n = stop - start
        record = dtype.itemsize * bands * pixels
        buf = getattr(local, "buf", None)
        if buf is None or len(buf) < n * record:
            buf = local.buf = bytearray(step * record)
        view = memoryview(buf)[: n * record]
        fd = os.open(path, os.O_RDONLY)
        try:
            got = os.preadv(fd, [view], data_offset + start * record)
        finally:
            os.close(fd)
        if got != n * record:
            raise InvalidContainerError(
                f"container {path} is truncated: samples {start}..{stop - 1} cannot be read",
                field="samples",
            )
        block = np.frombuffer(buf, dtype=dtype, count=n * bands * pixels).reshape(n, *shape)
        _chunk_features(block, feats[at : at + n], nd)
        return n

    done = 0
    report_every = max(1, len(jobs) // 50)
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(threads) as pool:
            for i, n in enumerate(pool.map(work, jobs)):
                done += n
                if progress and i % report_every == 0:
                    progress(done / total, f"features of {done:,}/{total:,} samples")
    else:
        for i, job in enumerate(jobs):
            done += work(job)
            if progress and i % report_every == 0:
                progress(done / total, f"features of {done:,}/{total:,} samples")
    if progress:
        progress(1.0, f"features of {total:,} samples")
    return feats
