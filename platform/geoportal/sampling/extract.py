"""Extract training samples from a scene where labels are.

Two modes:

* ``patch``: a ``patch_size``×``patch_size`` patch centred on every chosen
  labelled pixel (for an even size the centre is at offset ``patch_size // 2``,
  as in the models' ``dense_forward``), taking the class of its label. Point
  labels always give their pixel; polygon pixels are thinned by a ``stride``
  (a grid in scene pixels) or replaced by ``samples_per_polygon`` random pixels
  of each polygon (seeded).
* ``segmentation``: image/mask pairs on a grid (spacing ``stride``, by default
  the patch size) over the labelled areas; the mask holds class codes and 0
  where there is no label or no valid data.

The scene is read tile by tile (:class:`geoportal.tiling.TileGrid`) or strip by
strip, so memory is bounded by one tile plus one batch of patches, whatever
the scene's size. Labels may be vector files in any CRS (reprojected to the
scene's with :func:`geoportal.labels.read_labels`) or label rasters (codes
1..254, warped onto the scene grid with nearest neighbour when the grids
differ). Patches keep the scene's dtype; nodata pixels keep the nodata value.

Edge handling for windows that reach past the scene: ``skip`` drops them,
``pad`` fills the missing pixels with nodata (they count as invalid, so lower
``min_valid`` below 1 to keep such patches), ``shift`` moves the window inside
the scene (the patch keeps the class of the labelled pixel, which is then no
longer at its centre).

The set folder is assembled under a temporary name and renamed at the end, so
a failure leaves nothing under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rasterio.features import rasterize
from rasterio.io import DatasetReader
from rasterio.windows import Window
from shapely.geometry import box

from geoportal.atomic import atomic_path, atomic_write_text
from geoportal.classes import ClassInfo, make_classes
from geoportal.containers import ContainerWriter
from geoportal.errors import InvalidInputError, LabelsNotFoundError
from geoportal.labels import CLASS_CODE, is_vector, read_labels
from geoportal.raster import band_names, open_scene, valid_mask
from geoportal.samples import (
    SEGMENTATION_DIR,
    ClassModel,
    Normalisation,
    SampleSetMeta,
    write_sample_set_meta,
)
from geoportal.tiling import TileGrid, window_transform

Progress = Callable[[float, str], None]
SUMMARY_FILE = "summary.json"


class ExtractConfig(BaseModel):
    """Options of sample extraction."""

    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(16, description="patch height and width in pixels")
    mode: Literal["patch", "segmentation"] = Field(
        "patch", description="patch: one patch per labelled pixel; segmentation: image/mask grid"
    )
    class_field: str | None = Field(
        None, description="the labels' class field (names or codes); not used for label rasters"
    )
    stride: int | None = Field(
        None,
        description="patch mode: keep polygon pixels on a grid of this spacing (default 1); "
        "segmentation: grid spacing (default patch_size)",
    )
    samples_per_polygon: int | None = Field(
        None, description="patch mode: this many random pixels per polygon instead of a stride"
    )
    min_valid: float = Field(1.0, description="minimum fraction of valid (not nodata) pixels")
    min_labelled: float = Field(
        0.0, description="segmentation: minimum fraction of labelled pixels (above 0 always)"
    )
    edge: Literal["skip", "pad", "shift"] = Field(
        "skip", description="windows reaching past the scene: skip, pad with nodata, or shift"
    )
    all_touched: bool = Field(False, description="polygons burn every pixel they touch")
    class_names: dict[int, str] | None = Field(
        None, description="names for the codes of a label raster (else 'class <code>')"
    )
    container_size: int = Field(8192, description="most samples per container file")
    tile_size: int = Field(512, description="scene tile read at once (bounds memory)")
    seed: int = Field(0, description="seed for samples_per_polygon")


@dataclass
class ExtractResult:
    """The written sample set: its folder, its metadata and the summary."""

    folder: Path
    meta: SampleSetMeta
    summary: dict[str, Any]


def check_config(config: ExtractConfig) -> None:
    """Reject unusable options, naming the option and the fix."""
    if config.patch_size < 1:
        raise InvalidInputError("patch_size must be at least 1 pixel", field="patch_size")
    if config.mode == "segmentation" and config.patch_size < 2:
        raise InvalidInputError("segmentation needs patch_size of 2 or more", field="patch_size")
    if config.stride is not None and config.stride < 1:
        raise InvalidInputError("stride must be at least 1 pixel", field="stride")
    if config.samples_per_polygon is not None:
        if config.samples_per_polygon < 1:
            raise InvalidInputError(
                "samples_per_polygon must be at least 1", field="samples_per_polygon"
            )
        if config.mode != "patch":
            raise InvalidInputError(
                "samples_per_polygon applies to patch mode only", field="samples_per_polygon"
            )
    if not 0.0 <= config.min_valid <= 1.0:
        raise InvalidInputError("min_valid is a fraction between 0 and 1", field="min_valid")
    if not 0.0 <= config.min_labelled <= 1.0:
        raise InvalidInputError("min_labelled is a fraction between 0 and 1", field="min_labelled")
    if config.container_size < 1:
        raise InvalidInputError("container_size must be at least 1", field="container_size")
    if config.tile_size < 16:
        raise InvalidInputError("tile_size must be at least 16", field="tile_size")


# -- labels on the scene grid ---------------------------------------------------------------


class _LabelSource:
    """Labels burnt window by window: a feature id raster plus per-id code and kind."""

    classes: list[ClassInfo]
    codes: np.ndarray  # class code per feature id (0: none)
    is_point: np.ndarray  # per feature id
    by_feature: bool  # whether ids identify features (vector) or are class codes (raster)

    def ids(self, window: Window) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _VectorLabels(_LabelSource):
    def __init__(self, path: str, class_field: str, scene: DatasetReader, all_touched: bool):
        labelset = read_labels(path, class_field, target_crs=scene.crs)
        frame = labelset.features.reset_index(drop=True)
        kinds = frame.geom_type.isin(["Polygon", "MultiPolygon"]).to_numpy()
        # Polygons first, then the rest: later shapes win, so points override polygons.
        order = np.concatenate([np.flatnonzero(kinds), np.flatnonzero(~kinds)])
        self.frame = frame.iloc[order].reset_index(drop=True)
        self.classes = labelset.classes
        self.codes = np.concatenate([[0], self.frame[CLASS_CODE].to_numpy(np.int32)])
        self.is_point = np.concatenate([[False], ~kinds[order]])
        self.by_feature = True
        self.transform = scene.transform
        self.all_touched = all_touched
        self.sindex = self.frame.sindex

    def ids(self, window: Window) -> np.ndarray:
        transform = window_transform(self.transform, window)
        h, w = int(window.height), int(window.width)
        x0, y0 = transform @ (0, 0)
        x1, y1 = transform @ (w, h)
        hits = np.sort(self.sindex.query(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))))
        if not len(hits):
            return np.zeros((h, w), np.int32)
        shapes = ((self.frame.geometry.iloc[i], int(i) + 1) for i in hits)
        return rasterize(
            shapes, out_shape=(h, w), transform=transform, fill=0, dtype="int32",
            all_touched=self.all_touched,
        )  # fmt: skip


class _RasterLabels(_LabelSource):
    def __init__(self, path: str, scene: DatasetReader, names: dict[int, str] | None):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        if not Path(path).exists():
            raise LabelsNotFoundError(f"labels {path} do not exist", field="labels")
        self.src = open_scene(path)
        same = (
            self.src.crs == scene.crs
            and self.src.transform.almost_equals(scene.transform)
            and self.src.shape == scene.shape
        )
        self.reader: Any = self.src
        if not same:
            self.reader = WarpedVRT(
                self.src, crs=scene.crs, transform=scene.transform, width=scene.width,
                height=scene.height, resampling=Resampling.nearest,
            )  # fmt: skip
        self.nodata = self.src.nodata
        self.by_feature = False
        present = np.zeros(256, dtype=bool)
        for tile in TileGrid(scene.width, scene.height, 1024):
            present[np.unique(self.ids(tile.core))] = True
        present[0] = False
        codes = np.flatnonzero(present)
        if not len(codes):
            raise LabelsNotFoundError(
                f"label raster {Path(path).name} holds no class codes (1..254) over the scene",
                field="labels",
            )
        names = names or {}
        self.classes = make_classes({int(c): names.get(int(c), f"class {c}") for c in codes})
        self.codes = np.arange(256, dtype=np.int32)
        self.is_point = np.zeros(256, dtype=bool)

    def ids(self, window: Window) -> np.ndarray:
        data = self.reader.read(1, window=window)
        bad = (
            ~np.isfinite(data)
            if np.issubdtype(data.dtype, np.floating)
            else np.zeros(data.shape, bool)
        )
        if self.nodata is not None:
            bad |= data == self.nodata
        bad |= (data < 1) | (data > 254)
        out = np.where(bad, 0, np.nan_to_num(data)).astype(np.int32)
        if np.issubdtype(data.dtype, np.floating) and np.any(out != np.where(bad, 0, data)):
            raise InvalidInputError(
                "the label raster holds non-integer values; it must hold class codes 1..254",
                field="labels",
            )
        return out

    def close(self) -> None:
        if self.reader is not self.src:
            self.reader.close()
        self.src.close()


def _open_labels(labels: str, config: ExtractConfig, scene: DatasetReader) -> _LabelSource:
    if is_vector(labels):
        if not config.class_field:
            raise InvalidInputError(
                "class_field is required for vector labels: name the field holding the class",
                field="class_field",
            )
        return _VectorLabels(labels, config.class_field, scene, config.all_touched)
    return _RasterLabels(labels, scene, config.class_names)


def _check_class_names(classes: list[ClassInfo]) -> None:
    for c in classes:
        name = c.name
        if (
            not name
            or name in (".", "..", SEGMENTATION_DIR)
            or "/" in name
            or "\\" in name
            or name[0] == "."
        ):
            raise InvalidInputError(
                f"class name {name!r} (code {c.code}) cannot name a class folder; rename it in the "
                "labels (no '/', '\\', leading dot, or 'tiles')",
                field="class_field",
            )


# -- reading padded windows -------------------------------------------------------------------


def _read_padded(
    scene: DatasetReader, window: Window, fill: float
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (may reach past the scene); return (data, valid mask)."""
    c0, r0 = int(window.col_off), int(window.row_off)
    w, h = int(window.width), int(window.height)
    data = np.full((scene.count, h, w), fill, dtype=scene.dtypes[0])
    inside = np.zeros((h, w), dtype=bool)
    cc0, rr0 = max(c0, 0), max(r0, 0)
    cc1, rr1 = min(c0 + w, scene.width), min(r0 + h, scene.height)
    if cc1 > cc0 and rr1 > rr0:
        part = scene.read(window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
        data[:, rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = part
        inside[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = True
    return data, inside & valid_mask(data, scene.nodata)


def _window_sums(mask: np.ndarray, p: int) -> np.ndarray:
    """Sum of ``mask`` over every p×p window (top-left at each position)."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    return integral[p:, p:] - integral[:-p, p:] - integral[p:, :-p] + integral[:-p, :-p]


# -- statistics -----------------------------------------------------------------------------


class _BandStats:
    """Streaming per-band count, sum, sum of squares, min and max over valid pixels."""

    def __init__(self, bands: int) -> None:
        self.n = np.zeros(bands, np.int64)
        self.s = np.zeros(bands, np.float64)
        self.ss = np.zeros(bands, np.float64)
        self.lo = np.full(bands, np.inf)
        self.hi = np.full(bands, -np.inf)
        self.ref: np.ndarray | None = None  # shift for a stable variance

    def add(self, patches: np.ndarray, valid: np.ndarray) -> None:
        """Add (N, C, p, p) patches with their (N, p, p) valid masks."""
        if not valid.any():
            return
        for b in range(patches.shape[1]):
            v = patches[:, b][valid].astype(np.float64)
            if self.ref is None:
                self.ref = np.zeros(patches.shape[1])
            if self.n[b] == 0:
                self.ref[b] = v[0]
            d = v - self.ref[b]
            self.n[b] += v.size
            self.s[b] += d.sum()
            self.ss[b] += (d * d).sum()
            self.lo[b] = min(self.lo[b], v.min())
            self.hi[b] = max(self.hi[b], v.max())

    def mean_std(self) -> tuple[list[float], list[float]]:
        n = np.maximum(self.n, 1)
        ref = self.ref if self.ref is not None else np.zeros_like(self.s)
        mean = ref + self.s / n
        var = np.maximum(self.ss / n - (self.s / n) ** 2, 0.0)
        std = np.sqrt(var)
        std[std == 0] = 1.0
        return mean.tolist(), std.tolist()


# -- writers ----------------------------------------------------------------------------------


class _Writers:
    """Container writers per group (class folder or ``tiles``), rotated by size."""

    def __init__(self, folder: Path, common: dict[str, Any], size: int, masks: bool) -> None:
        self.folder, self.common, self.size, self.masks = folder, common, size, masks
        self.open: dict[str, ContainerWriter] = {}
        self.parts: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def writer(self, group: str) -> ContainerWriter:
        w = self.open.get(group)
        if w is not None and w.count >= self.size:
            w.close()
            w = None
        if w is None:
            part = self.parts.get(group, 0)
            self.parts[group] = part + 1
            w = ContainerWriter(
                self.folder / group / f"part-{part:05d}.npy", with_masks=self.masks, **self.common
            )
            self.open[group] = w
        return w

    def write(
        self,
        group: str,
        patches: np.ndarray,
        windows: np.ndarray,
        labels: np.ndarray | None,
        masks: np.ndarray | None = None,
    ) -> None:
        start = 0
        while start < len(patches):
            w = self.writer(group)
            n = min(self.size - w.count, len(patches) - start)
            sl = slice(start, start + n)
            w.extend(
                patches[sl], windows[sl], None if labels is None else labels[sl],
                None if masks is None else masks[sl],
            )  # fmt: skip
            start += n
        self.counts[group] = self.counts.get(group, 0) + len(patches)

    def close(self) -> None:
        for w in self.open.values():
            w.close()

    def abort(self) -> None:
        for w in self.open.values():
            w.abort()


# -- patch mode -------------------------------------------------------------------------------


def _chosen_ranks(
    source: _LabelSource, grid: TileGrid, per_polygon: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """For samples_per_polygon: the chosen pixel ranks, as sorted keys id·2^32 + rank."""
    n_ids = len(source.codes)
    counts = np.zeros(n_ids, np.int64)
    for tile in grid:
        ids = source.ids(tile.core)
        counts += np.bincount(ids.ravel(), minlength=n_ids)
    rng = np.random.default_rng(seed)
    keys = []
    for fid in range(1, n_ids):
        m = int(counts[fid])
        if m == 0 or source.is_point[fid]:
            continue
        ranks = np.arange(m) if m <= per_polygon else rng.choice(m, per_polygon, replace=False)
        keys.append(fid * (1 << 32) + np.sort(ranks))
    return (np.sort(np.concatenate(keys)) if keys else np.zeros(0, np.int64)), counts


def _patch_candidates(
    ids: np.ndarray,
    source: _LabelSource,
    core: Window,
    stride: int,
    chosen: np.ndarray | None,
    seen: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled pixels of a tile core to sample: (rows, cols, codes) in scene pixels."""
    rr, cc = np.nonzero(ids)
    fid = ids[rr, cc]
    rows, cols = rr + int(core.row_off), cc + int(core.col_off)
    if source.by_feature:
        point = source.is_point[fid]
        if chosen is not None and seen is not None:
            order = np.argsort(fid, kind="stable")
            sorted_ids = fid[order]
            first = np.searchsorted(sorted_ids, sorted_ids, side="left")
            local = np.empty_like(order)
            local[order] = np.arange(len(order)) - first
            rank = seen[fid] + local
            np.add.at(seen, fid, 1)
            keep = point | np.isin(fid.astype(np.int64) * (1 << 32) + rank, chosen)
        else:
            keep = point | ((rows % stride == 0) & (cols % stride == 0))
    else:
        keep = (rows % stride == 0) & (cols % stride == 0)
    return rows[keep], cols[keep], source.codes[fid[keep]]


def _extract_patches(
    scene: DatasetReader,
    source: _LabelSource,
    config: ExtractConfig,
    writers: _Writers,
    stats: _BandStats,
    names: dict[int, str],
    skipped: dict[str, int],
    progress: Progress | None,
) -> None:
    p = config.patch_size
    half = p // 2
    grid = TileGrid(scene.width, scene.height, config.tile_size)
    stride = config.stride or 1
    chosen = seen = None
    if config.samples_per_polygon is not None:
        if not source.by_feature:
            raise InvalidInputError(
                "samples_per_polygon needs vector labels (polygons); "
                "use stride with a label raster",
                field="samples_per_polygon",
            )
        chosen, _ = _chosen_ranks(source, grid, config.samples_per_polygon, config.seed)
        seen = np.zeros(len(source.codes), np.int64)
    fill = scene.nodata if scene.nodata is not None else 0
    pad = p - 1
    for t, tile in enumerate(grid):
        core = tile.core
        ids = source.ids(core)
        rows, cols, codes = _patch_candidates(ids, source, core, stride, chosen, seen)
        if progress:
            progress((t + 1) / len(grid), f"tile {t + 1}/{len(grid)}")
        if not len(rows):
            continue
        r_org, c_org = rows - half, cols - half
        if config.edge == "shift":
            r_org = np.clip(r_org, 0, max(scene.height - p, 0))
            c_org = np.clip(c_org, 0, max(scene.width - p, 0))
        outside = (r_org < 0) | (c_org < 0) | (r_org + p > scene.height) | (c_org + p > scene.width)
        if config.edge in ("skip", "shift"):
            skipped["edge"] += int(outside.sum())
            keep = ~outside
            r_org, c_org, codes = r_org[keep], c_org[keep], codes[keep]
        if not len(r_org):
            continue
        read = Window(int(core.col_off) - pad, int(core.row_off) - pad,
                      int(core.width) + 2 * pad, int(core.height) + 2 * pad)  # fmt: skip
        data, valid = _read_padded(scene, read, fill)
        lr = r_org - int(read.row_off)
        lc = c_org - int(read.col_off)
        frac = _window_sums(valid, p)[lr, lc] / float(p * p)
        ok = frac >= config.min_valid - 1e-12
        skipped["nodata"] += int((~ok).sum())
        lr, lc, codes = lr[ok], lc[ok], codes[ok]
        r_org, c_org = r_org[ok], c_org[ok]
        if not len(lr):
            continue
        view = np.lib.stride_tricks.sliding_window_view(data, (p, p), axis=(1, 2))
        patches = np.ascontiguousarray(view[:, lr, lc].transpose(1, 0, 2, 3))
        vmask = np.lib.stride_tricks.sliding_window_view(valid, (p, p))[lr, lc]
        stats.add(patches, vmask)
        windows = np.column_stack([c_org, r_org, np.full_like(c_org, p), np.full_like(c_org, p)])
        for code in np.unique(codes):
            sel = codes == code
            writers.write(names[int(code)], patches[sel], windows[sel], codes[sel])


# -- segmentation mode ------------------------------------------------------------------------


def _grid_origins(size: int, p: int, stride: int, edge: str) -> list[int]:
    if edge == "pad":
        return list(range(0, size, stride)) if size > 0 else []
    origins = list(range(0, size - p + 1, stride))
    if edge == "shift" and size >= p and (not origins or origins[-1] + p < size):
        origins.append(size - p)
    return origins


def _extract_segmentation(
    scene: DatasetReader,
    source: _LabelSource,
    config: ExtractConfig,
    writers: _Writers,
    stats: _BandStats,
    skipped: dict[str, int],
    progress: Progress | None,
) -> None:
    p = config.patch_size
    stride = config.stride or p
    fill = scene.nodata if scene.nodata is not None else 0
    rows = _grid_origins(scene.height, p, stride, config.edge)
    cols = np.array(_grid_origins(scene.width, p, stride, config.edge), dtype=np.int64)
    if not len(rows) or not len(cols):
        raise InvalidInputError(
            f"patch_size {p} is larger than the scene ({scene.width}x{scene.height}); "
            "use a smaller patch or edge='pad'",
            field="patch_size",
        )
    width = int(cols[-1]) + p
    for i, r in enumerate(rows):
        if progress:
            progress((i + 1) / len(rows), f"grid row {i + 1}/{len(rows)}")
        strip = Window(0, r, width, p)
        ids = _ids_padded(source, strip, scene)
        codes = source.codes[ids].astype(np.uint8)
        labelled = _window_sums(codes > 0, p)[0, cols] / float(p * p)
        has = (labelled > 0) & (labelled >= config.min_labelled)
        if not has.any():
            continue
        data, valid = _read_padded(scene, strip, fill)
        frac = _window_sums(valid, p)[0, cols] / float(p * p)
        ok = has & (frac >= config.min_valid - 1e-12)
        skipped["nodata"] += int((has & ~ok).sum())
        use = cols[ok]
        if not len(use):
            continue
        patches = np.stack([data[:, :, c : c + p] for c in use])
        vmask = np.stack([valid[:, c : c + p] for c in use])
        masks = np.stack([np.where(valid[:, c : c + p], codes[:, c : c + p], 0) for c in use])
        stats.add(patches, vmask)
        windows = np.column_stack(
            [use, np.full_like(use, r), np.full_like(use, p), np.full_like(use, p)]
        )
        writers.write(SEGMENTATION_DIR, patches, windows, None, masks.astype(np.uint8))


def _ids_padded(source: _LabelSource, window: Window, scene: DatasetReader) -> np.ndarray:
    c0, r0 = int(window.col_off), int(window.row_off)
    w, h = int(window.width), int(window.height)
    out = np.zeros((h, w), np.int32)
    cc1, rr1 = min(c0 + w, scene.width), min(r0 + h, scene.height)
    if cc1 > c0 and rr1 > r0:
        out[: rr1 - r0, : cc1 - c0] = source.ids(Window(c0, r0, cc1 - c0, rr1 - r0))
    return out


# -- entry point ------------------------------------------------------------------------------


def extract_samples(
    raster: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out_folder: str | os.PathLike[str],
    config: ExtractConfig | None = None,
    *,
    raster_ref: str | None = None,
    labels_ref: str | None = None,
    progress: Progress | None = None,
) -> ExtractResult:
    """Cut samples from ``raster`` where ``labels`` are and write a sample set.

    Args:
        raster: the scene (a path or an http(s) URL).
        labels: a vector labelset (any CRS) or a label raster (codes 1..254).
        out_folder: the sample-set folder to create (replaced if it exists).
        config: the options.
        raster_ref, labels_ref: how ``dataset.json`` names the sources
            (storage-relative); default to the given paths.
        progress: ``progress(fraction, message)``.

    Returns:
        The folder, its ``dataset.json`` content and the summary (also written
        as ``summary.json`` in the folder).

    Raises:
        InvalidInputError: unusable options, or no sample could be cut (labels
            outside the scene, all windows invalid).
        LabelsNotFoundError, InvalidRasterError: unreadable inputs.
    """
    config = config or ExtractConfig()
    check_config(config)
    out_folder = Path(out_folder)
    with open_scene(raster) as scene:
        source = _open_labels(os.fspath(labels), config, scene)
        try:
            if config.mode == "patch":
                _check_class_names(source.classes)
            names = {c.code: c.name for c in source.classes}
            bands = list(band_names(scene))
            common = {
                "bands": bands,
                "patch_size": config.patch_size,
                "dtype": scene.dtypes[0],
                "crs": scene.crs.to_string(),
                "source": raster_ref or os.fspath(raster),
                "transform": tuple(scene.transform)[:6],
                "extra": {"nodata": scene.nodata, "edge": config.edge, "mode": config.mode},
            }
            stats = _BandStats(scene.count)
            skipped = {"edge": 0, "nodata": 0}
            with atomic_path(out_folder) as tmp:
                tmp.mkdir()
                writers = _Writers(
                    tmp, common, config.container_size, config.mode == "segmentation"
                )
                try:
                    if config.mode == "patch":
                        _extract_patches(
                            scene, source, config, writers, stats, names, skipped, progress
                        )
                    else:
                        _extract_segmentation(
                            scene, source, config, writers, stats, skipped, progress
                        )
                    writers.close()
                except BaseException:
                    writers.abort()
                    raise
                total = sum(writers.counts.values())
                if total == 0:
                    raise InvalidInputError(
                        "no sample could be cut: the labels do not overlap valid pixels of the "
                        f"scene (skipped at the edge: {skipped['edge']}, too little valid data: "
                        f"{skipped['nodata']}); check the labels' extent, min_valid and edge",
                        field="labels",
                    )
                mean, std = stats.mean_std()
                if config.mode == "patch":
                    counts = {c.name: writers.counts.get(c.name, 0) for c in source.classes}
                else:
                    counts = _mask_counts(tmp / SEGMENTATION_DIR, source.classes)
                meta = SampleSetMeta(
                    mode=config.mode,
                    bands=bands,
                    patch_size=config.patch_size,
                    dtype=scene.dtypes[0],
                    crs=scene.crs.to_string(),
                    classes=[
                        ClassModel(code=c.code, name=c.name, color=c.color) for c in source.classes
                    ],
                    normalisation=Normalisation(mean=mean, std=std),
                    source={
                        "raster": raster_ref or os.fspath(raster),
                        "labels": labels_ref or os.fspath(labels),
                        "class_field": config.class_field or "",
                    },
                    counts=counts,
                    options={**config.model_dump(exclude={"class_names"}), "nodata": scene.nodata},
                )
                summary = {
                    "mode": config.mode,
                    "patch_size": config.patch_size,
                    "samples": total,
                    "counts": counts,
                    "skipped": skipped,
                    "bands": [
                        {
                            "name": name,
                            "mean": mean[b],
                            "std": std[b],
                            "min": float(stats.lo[b]),
                            "max": float(stats.hi[b]),
                            "valid_pixels": int(stats.n[b]),
                        }
                        for b, name in enumerate(bands)
                    ],
                    "dtype": scene.dtypes[0],
                    "nodata": scene.nodata,
                }
                if config.mode == "segmentation":
                    summary["tiles"] = total
                write_sample_set_meta(tmp, meta)
                atomic_write_text(tmp / SUMMARY_FILE, json.dumps(summary, indent=1))
        finally:
            source.close()
    return ExtractResult(out_folder, meta, summary)


def _mask_counts(folder: Path, classes: list[ClassInfo]) -> dict[str, int]:
    """Labelled pixels per class over all masks (segmentation)."""
    from geoportal.containers import Container, iter_container_files

    hist = np.zeros(256, np.int64)
    for path in iter_container_files(folder):
        masks = Container(path).masks
        if masks is not None:
            for start in range(0, len(masks), 1024):
                hist += np.bincount(np.asarray(masks[start : start + 1024]).ravel(), minlength=256)
    return {c.name: int(hist[c.code]) for c in classes}
