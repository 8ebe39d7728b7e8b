"""The windowed joint histogram of reference codes and classification codes.

Both sides are uint8 codes on one grid (see :mod:`geoportal.accuracy.inputs`),
so one ``np.bincount`` of ``reference << 8 | classification`` per window gives a
256 x 256 table of counts: row 0 is "no label" (never used), column 255 is
"no prediction" (the labelled pixels excluded because the classification is
nodata there). Matching classes to one another happens afterwards on this small
table, so the pass over the pixels does not depend on names or mappings.

Windows are strips aligned to the classification's blocks, processed by a few
threads that each hold their own dataset handles (GDAL decodes with the GIL
released); a strip without any label is not even read on the classification
side.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoportal.accuracy.inputs import (
    ClassificationSource,
    Grid,
    RasterReferenceReader,
    Reference,
)
from geoportal.classes import CLASS_NODATA

CODES = 256
Progress = Callable[[float, str], None]


@dataclass
class JointHistogram:
    """Counts of (reference code, classification code) pairs, one table per classification.

    Attributes:
        counts: int64 array (n, 256, 256): ``counts[i, r, p]`` pixels labelled ``r``
            in the reference where classification ``i`` says ``p`` (255 = nodata).
        common: like ``counts`` but only over pixels where *every* classification
            has a prediction (what a fair comparison of versions uses); ``None``
            with a single classification.
        reference_nodata: pixels where a label raster is nodata (not labels).
        pixels: pixels of the grid that were scanned.
    """

    counts: np.ndarray
    common: np.ndarray | None
    reference_nodata: int
    pixels: int

    @property
    def labelled(self) -> int:
        """Pixels with a reference label on the classification's grid."""
        return int(self.counts[0, 1:, :].sum())

    def excluded(self, index: int = 0) -> int:
        """Labelled pixels where classification ``index`` is nodata."""
        return int(self.counts[index, 1:, CLASS_NODATA].sum())


def strip_windows(grid: Grid, block_shape: tuple[int, int], target_pixels: int) -> list[Window]:
    """Full-width strips of about ``target_pixels``, aligned to the block rows."""
    block_rows = max(1, int(block_shape[0]))
    rows = max(1, target_pixels // max(grid.width, 1))
    rows = max(block_rows, rows // block_rows * block_rows)
    return [
        Window(0, r, grid.width, min(rows, grid.height - r)) for r in range(0, grid.height, rows)
    ]


def accumulate(hist: np.ndarray, reference: np.ndarray, prediction: np.ndarray) -> None:
    """Add the pairs of one window to ``hist`` (a flat int64 array of 65536).

    Dense labels: one bincount over every pixel (row 0 collects the unlabelled
    ones and is ignored). Sparse labels: gather the labelled pixels first, which
    is cheaper than counting all of them.
    """
    labelled = reference != 0
    n = int(np.count_nonzero(labelled))
    if n == 0:
        return
    if n * 4 > reference.size:
        ref, pred = reference.ravel(), prediction.ravel()
    else:
        ref, pred = reference[labelled], prediction[labelled]
    # bincount casts its input to intp anyway, and does so far faster from intp than uint16.
    pairs = ref.astype(np.intp)
    pairs <<= 8
    pairs |= pred
    hist += np.bincount(pairs, minlength=CODES * CODES)


class _Worker:
    """One thread's readers and running totals (no locks: summed at the end)."""

    def __init__(
        self,
        predictions: Sequence[ClassificationSource],
        reference: Reference,
        grid: Grid,
        resample: bool,
    ) -> None:
        self.ref_reader = reference.reader()
        self.readers: list[Any] = []
        try:
            for source in predictions:
                self.readers.append(source.reader(grid, resample))
        except BaseException:
            self.close()
            raise
        n = len(predictions)
        self.counts = np.zeros((n, CODES * CODES), dtype=np.int64)
        self.common = np.zeros((n, CODES * CODES), dtype=np.int64) if n > 1 else None

    def process(self, window: Window) -> None:
        reference = self.ref_reader.read(window)
        if not reference.any():
            return
        preds = [reader.read(window) for reader in self.readers]
        for i, pred in enumerate(preds):
            accumulate(self.counts[i], reference, pred)
        if self.common is not None:
            missing = np.zeros(reference.shape, dtype=bool)
            for pred in preds:
                missing |= pred == CLASS_NODATA
            for i, pred in enumerate(preds):
                accumulate(self.common[i], reference, np.where(missing, CLASS_NODATA, pred))

    @property
    def reference_nodata(self) -> int:
        return (
            self.ref_reader.nodata_pixels
            if isinstance(self.ref_reader, RasterReferenceReader)
            else 0
        )

    def close(self) -> None:
        for reader in [self.ref_reader, *self.readers]:
            reader.close()


def joint_histogram(
    predictions: Sequence[ClassificationSource],
    reference: Reference,
    *,
    resample: bool = False,
    window_pixels: int = 4_000_000,
    workers: int = 2,
    progress: Progress | None = None,
) -> JointHistogram:
    """Count (reference, classification) code pairs over the first classification's grid.

    Args:
        predictions: one classification, or several of the same scene (versions).
            The first one's grid is the grid of the assessment.
        reference: labels or label raster opened on that grid.
        resample: let further classifications on another grid be resampled (nearest).
        window_pixels: about how many pixels one strip holds.
        workers: threads reading and counting strips.
        progress: ``progress(fraction, message)`` after each strip.
    """
    grid = predictions[0].grid
    windows = strip_windows(grid, predictions[0].block_shape, window_pixels)
    local = threading.local()
    made: list[_Worker] = []
    lock = threading.Lock()

    def run(window: Window) -> None:
        worker = getattr(local, "worker", None)
        if worker is None:
            worker = _Worker(predictions, reference, grid, resample)
            local.worker = worker
            with lock:
                made.append(worker)
        worker.process(window)

    try:
        if workers <= 1 or len(windows) == 1:
            for k, window in enumerate(windows, 1):
                run(window)
                if progress:
                    progress(k / len(windows), f"counted {k}/{len(windows)} strips")
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="accuracy") as pool:
                futures = [pool.submit(run, w) for w in windows]
                try:
                    for k, future in enumerate(as_completed(futures), 1):
                        future.result()
                        if progress:
                            progress(k / len(windows), f"counted {k}/{len(windows)} strips")
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        n = len(predictions)
        counts = np.zeros((n, CODES * CODES), dtype=np.int64)
        common = np.zeros((n, CODES * CODES), dtype=np.int64) if n > 1 else None
        nodata = 0
        for worker in made:
            counts += worker.counts
            if common is not None and worker.common is not None:
                common += worker.common
            nodata += worker.reference_nodata
    finally:
        for worker in made:
            worker.close()
    shape = (n, CODES, CODES)
    return JointHistogram(
        counts=counts.reshape(shape),
        common=common.reshape(shape) if common is not None else None,
        reference_nodata=nodata,
        pixels=grid.width * grid.height,
    )


__all__ = ["JointHistogram", "accumulate", "joint_histogram", "strip_windows"]
