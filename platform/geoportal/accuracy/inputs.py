"""Open the two sides of an assessment: the classification raster and the reference.

Both sides are read window by window on the classification's grid, as uint8
codes: the classification with 255 meaning "no prediction" (its nodata), the
reference with 0 meaning "no label". A reference is either a labelset (any
CRS; reprojected quietly and burnt per window) or a label raster, which must lie
on the classification's grid unless the caller asks for nearest-neighbour
resampling. Rasters of other integer types (or float label rasters holding
whole class codes, like the NC ``landsat96_labelled_pixels.tif``) are converted
per window, so no side is ever loaded whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds

from geoportal.classes import CLASS_NODATA, NO_LABEL, ClassInfo, classes_from_json
from geoportal.errors import GeoportalError, InvalidInputError, InvalidRasterError
from geoportal.labels import LabelSet, is_vector, rasterize_labels, read_labels
from geoportal.raster import open_scene
from geoportal.tiling import window_transform

CLASSES_TAG = "GEOPORTAL_CLASSES"


def raster_classes(
    dataset: DatasetReader, *, field_name: str = "classification"
) -> list[ClassInfo]:
    """The classes a raster declares in its ``GEOPORTAL_CLASSES`` tag ([] when none).

    The tag is read from the dataset's metadata, then from band 1's (writers put it
    in either); colours of codes without the tag come from the colour table.

    Raises:
        InvalidRasterError: the tag is present but is not a JSON class list.
    """
    for tags in (dataset.tags(), dataset.tags(1)):
        text = tags.get(CLASSES_TAG)
        if text:
            try:
                return sorted(classes_from_json(text), key=lambda c: c.code)
            except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
                raise InvalidRasterError(
                    f"{Path(dataset.name).name}: its {CLASSES_TAG} tag is not a JSON list of "
                    f"{{code, name, color}} ({exc}); rewrite the tag or remove it",
                    field=field_name,
                ) from None
    return []


def raster_colors(dataset: DatasetReader) -> dict[int, str]:
    """``code -> #rrggbb`` from band 1's colour table, or {} without one."""
    try:
        table = dataset.colormap(1)
    except ValueError:
        return {}
    return {int(k): "#{:02x}{:02x}{:02x}".format(*v[:3]) for k, v in table.items()}


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, geotransform and size."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset: DatasetReader) -> Grid:
        return cls(dataset.crs, dataset.transform, dataset.width, dataset.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return window_bounds(Window(0, 0, self.width, self.height), self.transform)

    def same_as(self, other: Grid) -> bool:
        return (
            self.crs == other.crs
            and (self.width, self.height) == (other.width, other.height)
            and self.transform.almost_equals(
                other.transform, precision=1e-6 * abs(self.transform.a)
            )
        )

    def describe(self) -> str:
        t = self.transform
        crs = self.crs.to_string() if self.crs else "no CRS"
        return f"{self.width}x{self.height} px of {abs(t.a):g} m at ({t.c:g}, {t.f:g}) in {crs}"


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# -- classification -------------------------------------------------------------------


@dataclass(frozen=True)
class ClassificationSource:
    """A classification raster: one band of class codes, nodata 255 by contract."""

    path: str
    grid: Grid
    dtype: str
    nodata: float | None
    classes: tuple[ClassInfo, ...]
    colors: dict[int, str] = field(default_factory=dict)
    block_shape: tuple[int, int] = (256, 256)
    field_name: str = "classification"

    def reader(self, grid: Grid | None = None, resample: bool = False) -> ClassificationReader:
        return ClassificationReader(self, grid, resample)


def open_classification(
    location: str | os.PathLike[str], *, field_name: str = "classification"
) -> ClassificationSource:
    """Check a classification raster and gather its classes.

    Raises:
        InvalidRasterError: not a single-band raster of integer class codes.
    """
    with open_scene(location) as ds:
        name = Path(os.fspath(location)).name
        if ds.count != 1:
            raise InvalidRasterError(
                f"{field_name} {name} has {ds.count} bands; give a single-band raster of class "
                "codes (the output of run-inference)",
                field=field_name,
            )
        if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
            raise InvalidRasterError(
                f"{field_name} {name} holds {ds.dtypes[0]} values; a classification holds integer "
                "class codes (uint8, nodata 255)",
                field=field_name,
            )
        return ClassificationSource(
            path=os.fspath(location),
            grid=Grid.of(ds),
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            classes=tuple(raster_classes(ds, field_name=field_name)),
            colors=raster_colors(ds),
            block_shape=tuple(ds.block_shapes[0]),  # type: ignore[arg-type]
            field_name=field_name,
        )


def _class_codes(data: np.ndarray, nodata: float | None, field_name: str) -> np.ndarray:
    """Classification values as uint8 codes, 255 where there is no prediction."""
    if data.dtype == np.uint8 and nodata in (None, CLASS_NODATA):
        return data
    invalid = data == nodata if nodata is not None else np.zeros(data.shape, bool)
    values = data[~invalid]
    if values.size and (values.min() < 0 or values.max() > 254):
        bad = int(values.max() if values.max() > 254 else values.min())
        raise InvalidRasterError(
            f"{field_name} holds the value {bad}, which is no class code (0..254) nor its "
            "nodata; set the raster's nodata or recode it",
            field=field_name,
        )
    out = data.astype(np.uint8)
    out[invalid] = CLASS_NODATA
    return out


class ClassificationReader:
    """Reads windows of a classification on ``grid`` (its own, or resampled onto another)."""

    def __init__(self, source: ClassificationSource, grid: Grid | None, resample: bool) -> None:
        self.source = source
        self._ds = open_scene(source.path)
        self._vrt: WarpedVRT | None = None
        if grid is not None and not grid.same_as(source.grid):
            if not resample:
                self._ds.close()
                raise _grid_error(source.field_name, source.grid, grid)
            self._vrt = _warp(self._ds, grid, source.nodata if source.nodata is not None else 255)

    def read(self, window: Window) -> np.ndarray:
        ds = self._vrt or self._ds
        return _class_codes(ds.read(1, window=window), self.source.nodata, self.source.field_name)

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self._ds.close()


def _warp(ds: DatasetReader, grid: Grid, nodata: float) -> WarpedVRT:
    return WarpedVRT(
        ds,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.nearest,
        nodata=nodata,
    )


def _grid_error(field_name: str, theirs: Grid, ours: Grid) -> InvalidInputError:
    return InvalidInputError(
        f"{field_name} lies on another grid ({theirs.describe()}) than the classification "
        f"({ours.describe()}); resample it onto the classification's grid with nearest "
        "neighbour by passing resample=true (CLI: --resample), or give labels as vectors",
        field=field_name,
    )


# -- reference ------------------------------------------------------------------------


@dataclass
class VectorReference:
    """Labels (polygons or points) reprojected to the classification's CRS."""

    path: str
    labels: LabelSet
    numeric: bool
    grid: Grid
    features_total: int
    features_outside: int
    all_touched: bool = False
    kind: str = "vector"

    @property
    def classes(self) -> list[ClassInfo]:
        return list(self.labels.classes)

    @property
    def class_field(self) -> str:
        return self.labels.class_field

    def reader(self) -> VectorReader:
        return VectorReader(self)


class VectorReader:
    """Burns the labels that touch a window onto that window only."""

    def __init__(self, ref: VectorReference) -> None:
        self.ref = ref
        self._sindex = ref.labels.features.sindex

    def read(self, window: Window) -> np.ndarray:
        shape = (int(window.height), int(window.width))
        left, bottom, right, top = window_bounds(window, self.ref.grid.transform)
        hits = self._sindex.query(_box(left, bottom, right, top))
        if len(hits) == 0:
            return np.zeros(shape, dtype=np.uint8)
        subset = self.ref.labels.features.iloc[np.sort(hits)]
        labels = LabelSet(subset, self.ref.labels.classes, self.ref.class_field, self.ref.path)
        return rasterize_labels(
            labels,
            window_transform(self.ref.grid.transform, window),
            shape,
            self.ref.grid.crs,
            all_touched=self.ref.all_touched,
        )

    def close(self) -> None:
        pass


def _box(left: float, bottom: float, right: float, top: float) -> Any:
    from shapely.geometry import box

    return box(left, bottom, right, top)


@dataclass
class RasterReference:
    """A label raster: class codes, 0 or nodata where there is no label."""

    path: str
    source_grid: Grid
    grid: Grid
    dtype: str
    nodata: float | None
    declared: list[ClassInfo]
    colors: dict[int, str]
    resample: bool
    numeric: bool = True
    kind: str = "raster"
    class_field: str | None = None
    features_total: int | None = None
    features_outside: int | None = None

    @property
    def classes(self) -> list[ClassInfo]:
        return list(self.declared)

    def reader(self) -> RasterReferenceReader:
        return RasterReferenceReader(self)


def _reference_codes(data: np.ndarray, nodata: float | None, name: str) -> tuple[np.ndarray, int]:
    """Label-raster values as uint8 codes (0 = no label) and the count of nodata pixels."""
    if nodata is not None and isinstance(nodata, float) and math.isnan(nodata):
        missing = np.isnan(data)
    elif nodata is not None:
        missing = data == nodata
    else:
        missing = None
    n_missing = int(np.count_nonzero(missing)) if missing is not None else 0
    if data.dtype == np.uint8:
        if missing is None or nodata == NO_LABEL:
            out = data
        else:
            out = data.copy()
            out[missing] = NO_LABEL
        return out, n_missing
    valid = ~missing if missing is not None else np.ones(data.shape, bool)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data)
    values = data[valid]
    if values.size:
        lo, hi = values.min(), values.max()
        whole = not np.issubdtype(data.dtype, np.floating) or bool(
            np.all(values == np.round(values))
        )
        if lo < 0 or hi > 254 or not whole:
            bad = values[(values < 0) | (values > 254) | (values != np.round(values))][0]
            raise InvalidRasterError(
                f"reference raster {name} holds the value {bad:g}, which is no class code "
                "(whole numbers 1..254, 0 = no label); set its nodata or recode it",
                field="reference",
            )
    out = np.zeros(data.shape, dtype=np.uint8)
    out[valid] = values.astype(np.uint8)
    return out, n_missing


class RasterReferenceReader:
    """Reads label-raster windows on the classification's grid (resampled when allowed)."""

    def __init__(self, ref: RasterReference) -> None:
        self.ref = ref
        self.nodata_pixels = 0
        self._ds = open_scene(ref.path)
        self._vrt = None
        if not ref.source_grid.same_as(ref.grid):
            fill = ref.nodata if ref.nodata is not None else NO_LABEL
            self._vrt = _warp(self._ds, ref.grid, fill)

    def read(self, window: Window) -> np.ndarray:
        ds = self._vrt or self._ds
        codes, missing = _reference_codes(
            ds.read(1, window=window), self.ref.nodata, Path(self.ref.path).name
        )
        self.nodata_pixels += missing
        return codes

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self._ds.close()


Reference = VectorReference | RasterReference


def open_reference(
    location: str | os.PathLike[str],
    grid: Grid,
    *,
    class_field: str | None = None,
    resample: bool = False,
    all_touched: bool = False,
) -> Reference:
    """Open the reference: a labelset (by suffix) or a label raster, checked against ``grid``.

    Raises:
        MissingInputError: a labelset without ``class_field``.
        LabelsNotFoundError: the labelset is missing or empty.
        InvalidInputError: no overlap with the classification, or another grid
            without ``resample``.
    """
    path = os.fspath(location)
    name = Path(path).name
    if is_vector(path):
        if not class_field:
            from geoportal.errors import MissingInputError

            raise MissingInputError(
                f"reference {name} is a labelset: give class_field, the field holding the classes",
                field="class_field",
            )
        try:
            labels = read_labels(path, class_field)
        except GeoportalError as exc:
            if exc.field == "labels":
                exc.field = "reference"  # the input is called reference here
            raise
        numeric = bool(pd.api.types.is_numeric_dtype(labels.features[class_field]))
        labels = labels.to_crs(grid.crs)
        labels.features.sindex  # noqa: B018 - build the index once, before threads share it
        total = len(labels.features)
        inside = labels.features.intersects(_box(*grid.bounds))
        if not inside.any():
            raise InvalidInputError(
                f"reference {name} does not overlap the classification: the labels span "
                f"{_fmt_bounds(labels.features.total_bounds)} and the classification "
                f"{_fmt_bounds(grid.bounds)} (in {grid.crs.to_string()}); give labels of the "
                "same area",
                field="reference",
            )
        return VectorReference(
            path=path,
            labels=labels,
            numeric=numeric,
            grid=grid,
            features_total=total,
            features_outside=int((~inside).sum()),
            all_touched=all_touched,
        )
    with open_scene(path) as ds:
        if ds.count != 1:
            raise InvalidRasterError(
                f"reference raster {name} has {ds.count} bands; give one band of class codes",
                field="reference",
            )
        source_grid = Grid.of(ds)
        bounds = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
        if not _overlaps(bounds, grid.bounds):
            raise InvalidInputError(
                f"reference {name} does not overlap the classification: it spans "
                f"{_fmt_bounds(bounds)} and the classification {_fmt_bounds(grid.bounds)} "
                f"(in {grid.crs.to_string()}); give a reference of the same area",
                field="reference",
            )
        if not source_grid.same_as(grid) and not resample:
            raise _grid_error("reference", source_grid, grid)
        declared = raster_classes(ds, field_name="reference")
        return RasterReference(
            path=path,
            source_grid=source_grid,
            grid=grid,
            dtype=ds.dtypes[0],
            nodata=ds.nodata,
            declared=declared,
            colors=raster_colors(ds),
            resample=resample,
        )


def _fmt_bounds(b: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.1f}" for v in b) + ")"


__all__ = [
    "CLASSES_TAG",
    "ClassificationSource",
    "Grid",
    "RasterReference",
    "Reference",
    "VectorReference",
    "open_classification",
    "open_reference",
    "raster_classes",
]
