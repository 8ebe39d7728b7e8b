"""Labelsets: read polygons and points with a class field, reproject, rasterize.

A labelset is a vector file (GeoPackage, GeoJSON, Shapefile) whose features
carry a class in ``class_field``. The field may hold numeric codes or names:

* codes: each distinct value is a class code; names come from a companion text
  field that maps one-to-one to the codes (``label`` beside ``id``, say), or
  from a given class list, else ``class <code>``;
* names: codes come from a given class list, else from the sorted names (1..N).

Labels are reprojected to the scene's CRS (labels and scene often declare
different, nearly equal CRS, such as EPSG:3358 and EPSG:32119) and burnt onto
the scene grid with 0 meaning "no label".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize

from geoportal.classes import NO_LABEL, ClassInfo, by_name, default_color, make_classes
from geoportal.errors import InvalidInputError, LabelsNotFoundError

CLASS_CODE = "class_code"
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb")


@dataclass
class LabelSet:
    """Features with a resolved integer class code per feature.

    Attributes:
        features: a GeoDataFrame with a ``class_code`` column, in :attr:`crs`.
        classes: the classes present (and any given ones), sorted by code.
        class_field: the field the classes were read from.
        source: where the features came from.
    """

    features: gpd.GeoDataFrame
    classes: list[ClassInfo]
    class_field: str
    source: str

    @property
    def crs(self) -> CRS | None:
        return CRS.from_user_input(self.features.crs) if self.features.crs else None

    def to_crs(self, crs: CRS | str) -> LabelSet:
        """The same labels in ``crs`` (no-op when equal)."""
        target = CRS.from_user_input(crs)
        # rasterio's CRS equality ignores datum realisations (EPSG:3358 == EPSG:32119);
        # compare the definitions so that such labels are really transformed and carry
        # the scene's CRS afterwards.
        current = self.crs
        if current is not None and current.to_wkt() == target.to_wkt():
            return self
        return LabelSet(
            self.features.to_crs(target.to_wkt()), self.classes, self.class_field, self.source
        )

    def counts(self) -> dict[str, int]:
        """Features per class name."""
        names = {c.code: c.name for c in self.classes}
        vc = self.features[CLASS_CODE].value_counts()
        return {names[int(code)]: int(n) for code, n in sorted(vc.items())}


def _companion_names(frame: pd.DataFrame, class_field: str) -> dict[int, str] | None:
    for column in frame.columns:
        if column in (class_field, "geometry") or pd.api.types.is_numeric_dtype(frame[column]):
            continue
        pairs = frame[[class_field, column]].dropna().drop_duplicates()
        if len(pairs) and pairs[class_field].is_unique and pairs[column].is_unique:
            return {
                int(k): str(v).strip()
                for k, v in zip(pairs[class_field], pairs[column], strict=True)
            }
    return None


def resolve_classes(
    values: pd.Series, frame: pd.DataFrame, class_field: str, classes: Sequence[ClassInfo] | None
) -> tuple[np.ndarray, list[ClassInfo]]:
    """Map a class field's values to codes; return (codes per row, class list)."""
    if pd.api.types.is_numeric_dtype(values):
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise InvalidInputError(
                f"class field '{class_field}' holds non-integer numbers", field="class_field"
            )
        codes = values.astype(int).to_numpy()
        if classes:
            known = {c.code for c in classes}
            unknown = sorted(set(codes.tolist()) - known)
            if unknown:
                raise InvalidInputError(
                    f"class codes {unknown} in '{class_field}' are not in the given classes",
                    field="class_field",
                )
            return codes, sorted(classes, key=lambda c: c.code)
        names = _companion_names(frame, class_field) or {}
        present = sorted(set(codes.tolist()))
        return codes, make_classes({c: names.get(c, f"class {c}") for c in present})
    names_col = values.astype(str).str.strip()
    if classes:
        lookup = by_name(classes)
        unknown = sorted(set(names_col) - set(lookup))
        if unknown:
            raise InvalidInputError(
                f"class names {unknown} in '{class_field}' are not in the given classes",
                field="class_field",
            )
        return names_col.map(lambda n: lookup[n].code).to_numpy(), sorted(
            classes, key=lambda c: c.code
        )
    distinct = sorted(set(names_col))
    mapping = {name: i + 1 for i, name in enumerate(distinct)}
    return names_col.map(mapping).to_numpy(), make_classes({v: k for k, v in mapping.items()})


def read_labels(
    location: str | os.PathLike[str],
    class_field: str,
    *,
    target_crs: CRS | str | None = None,
    classes: Sequence[ClassInfo] | None = None,
    layer: str | None = None,
) -> LabelSet:
    """Read a labelset and give every feature a class code.

    Raises:
        LabelsNotFoundError: the file is missing or has no features.
        InvalidInputError: the class field is missing, or values are unusable.
    """
    path = Path(location)
    if not path.exists():
        raise LabelsNotFoundError(f"labels {path} do not exist", field="labels")
    try:
        frame = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InvalidInputError(
            f"labels {path.name} cannot be read as vector data ({exc})", field="labels"
        ) from None
    if frame.empty:
        raise LabelsNotFoundError(
            f"labels {path.name} hold no features: draw or import some first", field="labels"
        )
    if class_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != "geometry")
        raise InvalidInputError(
            f"class field '{class_field}' is not in {path.name}; its fields are: {fields}",
            field="class_field",
        )
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty & frame[class_field].notna()]
    if frame.empty:
        raise LabelsNotFoundError(f"labels {path.name} hold no usable features", field="labels")
    if frame.crs is None:
        raise InvalidInputError(
            f"labels {path.name} have no CRS: save them with one", field="labels"
        )
    codes, class_list = resolve_classes(frame[class_field], frame, class_field, classes)
    frame = frame.copy()
    frame[CLASS_CODE] = codes.astype("int32")
    labelset = LabelSet(frame, class_list, class_field, str(path))
    return labelset.to_crs(target_crs) if target_crs is not None else labelset


def rasterize_labels(
    labelset: LabelSet,
    transform: Affine,
    shape: tuple[int, int],
    crs: CRS | str,
    *,
    all_touched: bool = False,
) -> np.ndarray:
    """Burn the labels onto a grid: a uint8 array, 0 where there is no label.

    Polygons burn the pixels whose centre they contain (``all_touched`` for every
    touched pixel); points burn the pixel they fall in. Later features win where
    features overlap, points over polygons.
    """
    labels = labelset.to_crs(crs).features
    polys = labels[labels.geom_type.isin(["Polygon", "MultiPolygon"])]
    others = labels[~labels.geom_type.isin(["Polygon", "MultiPolygon"])]
    shapes = [
        (geom, int(code))
        for frame in (polys, others)
        for geom, code in zip(frame.geometry, frame[CLASS_CODE], strict=True)
    ]
    if not shapes:
        return np.zeros(shape, dtype=np.uint8)
    return rasterize(
        shapes,
        out_shape=shape,
        transform=transform,
        fill=NO_LABEL,
        dtype="uint8",
        all_touched=all_touched,
    )


def is_vector(location: str | os.PathLike[str]) -> bool:
    """Whether a location names a vector labelset (by suffix)."""
    return Path(location).suffix.lower() in VECTOR_SUFFIXES


def class_name_color(code: int, classes: Sequence[ClassInfo]) -> tuple[str, str]:
    for c in classes:
        if c.code == code:
            return c.name, c.color
    return f"class {code}", default_color(code)
