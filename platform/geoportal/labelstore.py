"""A user's labelsets in the storage: save, list, load, versions, class statistics.

A labelset is ``users/<name>/labels/<labelset>.gpkg``: one layer (named like the
labelset) of polygons and points with

* ``class`` (int code) and ``label`` (class name), which
  :func:`geoportal.labels.read_labels` reads with ``class_field="class"``
  (it finds the names in ``label``);
* ``author`` and ``timestamp`` (ISO 8601, UTC) of the last change of each feature;
* ``label_id``: a stable id the labeling map uses to track edits.

The class list with colours (also classes without features yet) travels in the
layer metadata under ``GEOPORTAL_CLASSES``. Saves are atomic, and the previous
file is first copied to ``labels/.versions/<labelset>/<timestamp>.gpkg``, so a
mistaken save loses nothing: :func:`restore_version` brings any version back
(and keeps the current one as a version too).

GDAL names a GeoPackage layer after the file, and atomic writes use temporary
names with dots and dashes, so every read and write passes ``layer=`` explicitly.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from geoportal.atomic import atomic_path
from geoportal.classes import ClassInfo, by_code, classes_from_json, classes_to_json, make_classes
from geoportal.errors import InvalidInputError, LabelsNotFoundError
from geoportal.storage import Storage

CLASS_FIELD = "class"
NAME_FIELD = "label"
ID_FIELD = "label_id"
AUTHOR_FIELD = "author"
TIME_FIELD = "timestamp"
CLASSES_KEY = "GEOPORTAL_CLASSES"
VERSIONS = ".versions"
EQUAL_AREA = CRS.from_epsg(6933)  # WGS 84 / NSIDC EASE-Grid 2.0 Global (equal area)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


def check_labelset_name(name: str) -> str:
    """Return ``name`` if it is a safe labelset name, else raise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"labelset name {name!r} is not allowed: use letters, digits, '_' and '-' "
            "(up to 100, starting with a letter or digit)",
            field="labelset",
        )
    return name


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Labelset:
    """A loaded labelset: features (GeoDataFrame in its saved CRS) and classes."""

    name: str
    path: Path
    features: gpd.GeoDataFrame
    classes: list[ClassInfo]

    @property
    def crs(self) -> CRS | None:
        return CRS.from_user_input(self.features.crs) if self.features.crs else None


@dataclass(frozen=True)
class LabelsetEntry:
    """One row of :func:`list_labelsets`."""

    name: str
    location: str
    features: int
    modified: str
    versions: int


@dataclass(frozen=True)
class Version:
    """An earlier state of a labelset."""

    timestamp: str
    path: Path


@dataclass(frozen=True)
class ClassStats:
    """Count and area of one class; area in m² (0 for points)."""

    code: int
    name: str
    color: str
    count: int
    area_m2: float


class LabelStore:
    """The labelsets of one user in a storage.

    Args:
        storage: the storage.
        user: whose ``labels/`` folder this is (every path passes the resolver).
    """

    def __init__(self, storage: Storage, user: str) -> None:
        self.storage = storage
        self.user = user

    @property
    def folder(self) -> Path:
        return self.storage.resolve(self.user, f"users/{self.user}/labels", write=True)

    def path(self, name: str) -> Path:
        """Where labelset ``name`` lives (it may not exist yet)."""
        check_labelset_name(name)
        return self.storage.resolve(
            self.user, f"users/{self.user}/labels/{name}.gpkg", write=True, field="labelset"
        )

    def location(self, name: str) -> str:
        """The storage-relative location of labelset ``name`` (input of the processes)."""
        return f"users/{self.user}/labels/{check_labelset_name(name)}.gpkg"

    def versions_dir(self, name: str) -> Path:
        return self.folder / VERSIONS / check_labelset_name(name)

    # -- listing ------------------------------------------------------------------------------

    def labelsets(self) -> list[LabelsetEntry]:
        """The user's labelsets, by name."""
        import pyogrio

        entries = []
        folder = self.folder
        if not folder.exists():
            return []
        for path in sorted(folder.glob("*.gpkg")):
            name = path.stem
            if not _NAME.match(name):
                continue  # temporary files and foreign names
            try:
                count = int(pyogrio.read_info(path, layer=name)["features"])
            except Exception:  # not a labelset of ours (no such layer): skip it
                continue
            modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(
                timespec="seconds"
            )
            entries.append(
                LabelsetEntry(name, self.location(name), count, modified, len(self.versions(name)))
            )
        return entries

    def versions(self, name: str) -> list[Version]:
        """Earlier versions of ``name``, oldest first."""
        folder = self.versions_dir(name)
        if not folder.exists():
            return []
        return [Version(p.stem, p) for p in sorted(folder.glob("*.gpkg")) if _is_version(p)]

    # -- reading ------------------------------------------------------------------------------

    def load(self, name: str) -> Labelset:
        """Load labelset ``name`` (features in their saved CRS, classes with colours).

        Raises:
            LabelsNotFoundError: there is no such labelset.
        """
        path = self.path(name)
        if not path.exists():
            known = ", ".join(e.name for e in self.labelsets()) or "none yet"
            raise LabelsNotFoundError(
                f"labelset {name!r} does not exist in users/{self.user}/labels/ (known: {known})",
                field="labelset",
            )
        return _read(path, name)

    # -- writing ------------------------------------------------------------------------------

    def save(
        self,
        name: str,
        features: gpd.GeoDataFrame,
        classes: Sequence[ClassInfo],
        *,
        author: str | None = None,
    ) -> Path:
        """Save ``features`` as labelset ``name``, keeping the previous file as a version.

        ``features`` needs a CRS and a ``class`` column of codes from ``classes``;
        missing ``label``, ``author``, ``timestamp`` and ``label_id`` values are
        filled (author defaults to the store's user). Mixed polygons and points
        are fine. An empty frame saves an empty labelset (everything deleted).

        Raises:
            InvalidInputError: no CRS, no class column, or codes not in ``classes``.
        """
        frame = self._prepare(features, classes, author or self.user)
        final = self.path(name)
        if final.exists():
            self._keep_version(name, final)
        with atomic_path(final) as tmp:
            _write(frame, tmp, name, classes)
        return final

    def _prepare(
        self, features: gpd.GeoDataFrame, classes: Sequence[ClassInfo], author: str
    ) -> gpd.GeoDataFrame:
        if not isinstance(features, gpd.GeoDataFrame):
            raise InvalidInputError("features must be a GeoDataFrame", field="features")
        if features.crs is None:
            raise InvalidInputError(
                "labels have no CRS: set one (e.g. frame.set_crs('EPSG:4326'))", field="crs"
            )
        if not classes:
            raise InvalidInputError("give the class list (code, name, colour)", field="classes")
        if CLASS_FIELD not in features.columns:
            raise InvalidInputError(
                f"labels need a '{CLASS_FIELD}' column with class codes", field="class"
            )
        known = by_code(classes)
        frame = features.copy()
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        codes = pd.to_numeric(frame[CLASS_FIELD], errors="coerce")
        bad = sorted({str(v) for v, c in zip(frame[CLASS_FIELD], codes, strict=True)
                      if pd.isna(c) or int(c) not in known})  # fmt: skip
        if bad:
            raise InvalidInputError(
                f"class codes {bad} are not in the class list {sorted(known)}", field="class"
            )
        frame[CLASS_FIELD] = codes.astype("int32")
        frame[NAME_FIELD] = [known[int(c)].name for c in frame[CLASS_FIELD]]
        stamp = now_iso()
        for column, fill in ((AUTHOR_FIELD, author), (TIME_FIELD, stamp)):
            if column not in frame.columns:
                frame[column] = fill
            frame[column] = frame[column].fillna(fill).astype(str)
        if ID_FIELD not in frame.columns:
            frame[ID_FIELD] = None
        frame[ID_FIELD] = [
            str(v) if isinstance(v, str) and v else uuid.uuid4().hex for v in frame[ID_FIELD]
        ]
        if frame[ID_FIELD].duplicated().any():
            raise InvalidInputError("label_id values must be unique", field=ID_FIELD)
        columns = [ID_FIELD, CLASS_FIELD, NAME_FIELD, AUTHOR_FIELD, TIME_FIELD]
        extra = [c for c in frame.columns if c not in (*columns, "geometry")]
        return gpd.GeoDataFrame(frame[columns + extra], geometry=frame.geometry, crs=frame.crs)

    def _keep_version(self, name: str, current: Path) -> Path:
        folder = self.versions_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S_%fZ")
        target = folder / f"{stamp}.gpkg"
        while target.exists():
            stamp += "1"
            target = folder / f"{stamp}.gpkg"
        with atomic_path(target) as tmp:
            shutil.copyfile(current, tmp)
        return target

    def restore_version(self, name: str, timestamp: str) -> Path:
        """Make version ``timestamp`` the current labelset (the current one becomes a version).

        Raises:
            LabelsNotFoundError: no such version.
        """
        versions = {v.timestamp: v for v in self.versions(name)}
        if timestamp not in versions:
            raise LabelsNotFoundError(
                f"labelset {name!r} has no version {timestamp!r}; versions: "
                + (", ".join(versions) or "none"),
                field="version",
            )
        final = self.path(name)
        if final.exists():
            self._keep_version(name, final)
        with atomic_path(final) as tmp:
            shutil.copyfile(versions[timestamp].path, tmp)
        return final


def _is_version(path: Path) -> bool:
    return not path.name.startswith(".")


def _write(frame: gpd.GeoDataFrame, path: Path, layer: str, classes: Sequence[ClassInfo]) -> None:
    import pyogrio

    pyogrio.write_dataframe(
        frame,
        path,
        layer=layer,
        driver="GPKG",
        geometry_type="Unknown",
        promote_to_multi=False,
        layer_metadata={CLASSES_KEY: json.dumps(classes_to_json(classes))},
    )


def _read(path: Path, layer: str) -> Labelset:
    import pyogrio

    try:
        info = pyogrio.read_info(path, layer=layer)
        frame = gpd.read_file(path, layer=layer)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InvalidInputError(
            f"labelset {path.name} cannot be read ({exc})", field="labelset"
        ) from None
    meta = (info.get("layer_metadata") or {}).get(CLASSES_KEY)
    if meta:
        classes = classes_from_json(meta)
    elif CLASS_FIELD in frame.columns and len(frame):
        names = dict(zip(frame[CLASS_FIELD].astype(int), frame.get(NAME_FIELD, ""), strict=False))
        classes = make_classes({c: str(n) or f"class {c}" for c, n in names.items()})
    else:
        classes = []
    return Labelset(layer, path, frame, classes)


def vector_layer(path: Path) -> str | None:
    """The layer to read from a vector file: for a GeoPackage the one named like the
    file, else its only layer; None lets the driver choose (other formats)."""
    if path.suffix.lower() != ".gpkg":
        return None
    import pyogrio

    names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    if path.stem in names:
        return path.stem
    return names[0] if len(names) == 1 else None


def area_crs(crs: Any, scene_crs: Any = None) -> CRS:
    """The CRS areas are measured in: the scene's projected CRS, the labels' own
    projected CRS, else a global equal-area CRS (never degrees)."""
    for candidate in (scene_crs, crs):
        if candidate is not None:
            c = CRS.from_user_input(candidate)
            if c.is_projected:
                return c
    return EQUAL_AREA


def class_statistics(
    features: gpd.GeoDataFrame,
    classes: Sequence[ClassInfo],
    *,
    scene_crs: Any = None,
    class_field: str = CLASS_FIELD,
) -> list[ClassStats]:
    """Count and area (m²) per class, every class listed (zero when absent).

    Areas are measured in ``scene_crs`` when it is projected (the grid the
    samples are cut from), else in the labels' projected CRS, else in an
    equal-area CRS, so geographic labels never yield square degrees.
    """
    if features.crs is None and len(features):
        raise InvalidInputError("labels have no CRS: areas cannot be measured", field="crs")
    counts: dict[int, int] = {c.code: 0 for c in classes}
    areas: dict[int, float] = {c.code: 0.0 for c in classes}
    if len(features):
        target = area_crs(features.crs, scene_crs)
        projected = features.to_crs(target)
        unit = target.axis_info[0].unit_conversion_factor if target.axis_info else 1.0
        for code, geom in zip(projected[class_field].astype(int), projected.geometry, strict=True):
            counts[code] = counts.get(code, 0) + 1
            areas[code] = areas.get(code, 0.0) + float(geom.area) * unit * unit
    known = by_code(classes)
    result = []
    for code in sorted(counts):
        info = known.get(code) or ClassInfo(code, f"class {code}", "#808080")
        result.append(ClassStats(code, info.name, info.color, counts[code], areas[code]))
    return result


def features_from_geojson(
    features: Sequence[dict[str, Any]], crs: Any = "EPSG:4326"
) -> gpd.GeoDataFrame:
    """A GeoDataFrame from GeoJSON features (the map's store) with their properties."""
    if not features:
        return gpd.GeoDataFrame({CLASS_FIELD: pd.Series([], dtype="int32")}, geometry=[], crs=crs)
    return gpd.GeoDataFrame.from_features(list(features), crs=crs)
