"""The catalog of ``datasets/``: ingest scenes and labelsets, keep a STAC catalog of them.

``datasets/`` is the platform's shared remote-sensing database. Scenes are added
by :func:`add_datasets` (validated first, then copied or hard-linked in through a
temporary name), labelsets by :func:`add_labels` (validated, then stored as a
GeoPackage under ``datasets/labels/``). Both keep a static STAC catalog up to
date under ``datasets/catalog/``::

    datasets/catalog/catalog.json              the root catalog
    datasets/catalog/scenes/catalog.json       one item per scene
    datasets/catalog/scenes/<id>/<id>.json
    datasets/catalog/labels/catalog.json       one item per labelset
    datasets/catalog/labels/<id>/<id>.json

Scene items carry the footprint (WGS84 geometry and bbox), the projection
(``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``), the bands
(``eo:bands``) and per-band dtype, nodata and statistics (``raster:bands``).
Labelset items use the label extension (classes, counts) and link to the scenes
they overlap. Asset hrefs are relative, so the storage can move.

The catalog is derived data: :func:`update_catalog` rebuilds it from the files,
reusing the items of files whose size and modification time did not change, and
every JSON file is written atomically (catalog.json last), so readers never see
half a catalog. A lock file serialises concurrent updates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import (
    DataType,
    NoDataStrings,
    RasterBand,
    RasterExtension,
    Statistics,
)
from pystac.stac_io import DefaultStacIO
from rasterio.enums import Resampling
from rasterio.io import DatasetReader

from geoportal.atomic import atomic_path, atomic_write_text, is_temporary, temporary_sibling
from geoportal.classes import ClassInfo, classes_from_json, classes_to_json
from geoportal.errors import GeoportalError, InvalidInputError, StorageNotFoundError
from geoportal.labels import CLASS_CODE, VECTOR_SUFFIXES, read_labels
from geoportal.raster import WGS84, SceneInfo, describe_scene, open_scene, validate_scene
from geoportal.storage import Storage

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

CATALOG_DIR = "catalog"
LABELS_DIR = "labels"
CATALOG_ID = "geoportal-datasets"
META_CLASS_FIELD = "GEOPORTAL_CLASS_FIELD"
META_CLASSES = "GEOPORTAL_CLASSES"
LABEL_SCHEMA = "https://stac-extensions.github.io/label/v1.0.1/schema.json"
# Files GDAL writes beside a raster; they are part of it, not scenes of their own.
_SIDECARS = (".aux.xml", ".ovr", ".msk", ".xml", ".prj", ".tfw", ".wld", ".json")
_STATS_PIXELS = 2_000_000  # above this, statistics come from a decimated read
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogued dataset, as :func:`list_datasets` and the CLI show it.

    Attributes:
        id: the STAC item id (the file name without suffix).
        kind: ``scene`` or ``labels``.
        path: the file, storage-relative (``datasets/…``).
        crs: ``EPSG:nnnn`` where the CRS has a code, else WKT.
        bounds: bounds in ``crs``.
        bounds_wgs84: lon/lat bounds (the STAC bbox).
        footprint: the WGS84 GeoJSON geometry (the STAC geometry).
        width, height, count, dtype, nodata, bands: the grid and bands (scenes).
        class_field, classes, features, counts: the classes (labelsets).
        size_bytes: the file's size.
    """

    id: str
    kind: Literal["scene", "labels"]
    path: str
    crs: str
    bounds: tuple[float, ...]
    bounds_wgs84: tuple[float, ...]
    footprint: dict[str, Any]
    size_bytes: int
    width: int | None = None
    height: int | None = None
    count: int | None = None
    dtype: str | None = None
    nodata: float | None = None
    bands: tuple[str, ...] = ()
    class_field: str | None = None
    classes: tuple[ClassInfo, ...] = ()
    features: int | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file name inside ``datasets/``."""
        return Path(self.path).name

    @classmethod
    def from_item(cls, item: pystac.Item) -> CatalogEntry:
        """Read an entry back from a catalogued STAC item."""
        props = item.properties
        proj = ProjectionExtension.ext(item)
        crs = proj.code or proj.wkt2 or ""
        common = {
            "id": item.id,
            "path": str(props["geoportal:path"]),
            "crs": crs,
            "bounds": tuple(proj.bbox or ()),
            "bounds_wgs84": tuple(item.bbox or ()),
            "footprint": json.loads(json.dumps(item.geometry or {})),
            "size_bytes": int(props.get("geoportal:size", 0)),
        }
        if props.get("geoportal:kind") == "labels":
            return cls(
                kind="labels",
                class_field=props.get("geoportal:class_field"),
                classes=tuple(classes_from_json(props.get("geoportal:classes", []))),
                features=props.get("geoportal:features"),
                counts=dict(props.get("geoportal:counts", {})),
                **common,
            )
        asset = item.assets["data"]
        raster_bands = RasterExtension.ext(asset).bands or []
        eo_bands = EOExtension.ext(asset).bands or []
        nodata = raster_bands[0].nodata if raster_bands else None
        shape = proj.shape
        return cls(
            kind="scene",
            width=shape[1] if shape else None,
            height=shape[0] if shape else None,
            count=len(eo_bands) or len(raster_bands),
            dtype=str(raster_bands[0].data_type) if raster_bands else None,
            nodata=_nodata_from_stac(nodata),
            bands=tuple(b.name for b in eo_bands),
            **common,
        )


@dataclass(frozen=True)
class CatalogUpdate:
    """What :func:`update_catalog` did.

    Attributes:
        entries: every catalogued dataset, scenes first, by id.
        skipped: files under ``datasets/`` that could not be catalogued, with why.
        catalog: the root ``catalog.json``.
    """

    entries: list[CatalogEntry]
    skipped: list[tuple[str, str]]
    catalog: Path


# -- small helpers ------------------------------------------------------------------------


def catalog_dir(storage: Storage) -> Path:
    """``datasets/catalog/``."""
    return storage.datasets_dir / CATALOG_DIR


def labels_dir(storage: Storage) -> Path:
    """``datasets/labels/``."""
    return storage.datasets_dir / LABELS_DIR


def item_id(path: Path) -> str:
    """The STAC item id of a dataset file: its name without suffix, made URL-safe."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return _ID_CHARS.sub("_", stem).strip("._-") or "dataset"


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)


def _nodata_to_stac(nodata: float | None) -> float | NoDataStrings | None:
    if nodata is None:
        return None
    if math.isnan(nodata):
        return NoDataStrings.NAN
    if math.isinf(nodata):
        return NoDataStrings.INF if nodata > 0 else NoDataStrings.NINF
    return float(nodata)


def _nodata_from_stac(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)  # "nan", "inf" and "-inf" parse as floats


def _stac_dtype(dtype: str) -> DataType | None:
    name = {"complex64": "cfloat32", "complex128": "cfloat64"}.get(dtype, dtype)
    try:
        return DataType(name)
    except ValueError:
        return None


_COMMON_NAMES = (
    (re.compile(r"\bcoastal\b"), "coastal"),
    (re.compile(r"\bred[- ]?edge\b"), "rededge"),
    (re.compile(r"\bnarrow nir\b|\bnir ?08\b"), "nir08"),
    (re.compile(r"\bswir ?1\b|\bswir ?16\b"), "swir16"),
    (re.compile(r"\bswir ?2\b|\bswir ?22\b"), "swir22"),
    (re.compile(r"\bnir\b"), "nir"),
    (re.compile(r"\bblue\b"), "blue"),
    (re.compile(r"\bgreen\b"), "green"),
    (re.compile(r"\bred\b"), "red"),
    (re.compile(r"\bpan(chromatic)?\b"), "pan"),
)
_WAVELENGTH = re.compile(r"(\d{3,5})\s*nm\b")


def _eo_band(name: str) -> Band:
    """An ``eo:bands`` entry; common name and wavelength read from a description if stated."""
    text = name.lower()
    common = next((c for pattern, c in _COMMON_NAMES if pattern.search(text)), None)
    match = _WAVELENGTH.search(text)
    wavelength = int(match.group(1)) / 1000 if match else None
    return Band.create(name=name, common_name=common, center_wavelength=wavelength)


def _acquired(dataset: DatasetReader, path: Path) -> dict[str, Any]:
    """The item's time: a date from the raster's tags if there is one, else the file's time.

    STAC requires a time; scenes without one get the file's modification time,
    flagged with ``geoportal:datetime_source = file``.
    """
    tags = dataset.tags()
    for key in ("TIFFTAG_DATETIME", "ACQUISITION_DATE", "DATE", "DATETIME"):
        text = tags.get(key, "").strip()
        for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                when = dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
            except ValueError:
                continue
            return {"datetime": when, "source": key}
    year = tags.get("ACQUISITION_YEAR", "").strip()
    if year.isdigit():
        start = dt.datetime(int(year), 1, 1, tzinfo=dt.UTC)
        end = dt.datetime(int(year), 12, 31, 23, 59, 59, tzinfo=dt.UTC)
        return {"datetime": None, "start": start, "end": end, "source": "ACQUISITION_YEAR"}
    mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC).replace(microsecond=0)
    return {"datetime": mtime, "source": "file"}


def band_statistics(dataset: DatasetReader) -> list[Statistics]:
    """Per-band minimum, maximum, mean, standard deviation and valid percentage.

    Nodata and non-finite pixels are left out. Rasters over ~2 Mpx are read
    decimated (nearest neighbour), which keeps cataloguing a large scene cheap
    at the cost of approximate figures.
    """
    scale = max(1.0, math.sqrt(dataset.width * dataset.height / _STATS_PIXELS))
    shape = (
        dataset.count,
        max(1, round(dataset.height / scale)),
        max(1, round(dataset.width / scale)),
    )
    data = dataset.read(out_shape=shape, resampling=Resampling.nearest)
    out = []
    for band in data:
        valid = np.ones(band.shape, dtype=bool)
        nodata = dataset.nodata
        if nodata is not None and not math.isnan(nodata):
            valid &= band != nodata
        if np.issubdtype(band.dtype, np.floating):
            valid &= np.isfinite(band)
        values = band[valid].astype(np.float64)
        if values.size == 0:
            out.append(Statistics.create(valid_percent=0.0))
            continue
        out.append(
            Statistics.create(
                minimum=float(values.min()),
                maximum=float(values.max()),
                mean=round(float(values.mean()), 6),
                stddev=round(float(values.std()), 6),
                valid_percent=round(100.0 * values.size / band.size, 4),
            )
        )
    return out


# -- items --------------------------------------------------------------------------------


def _base_properties(storage: Storage, path: Path, kind: str) -> dict[str, Any]:
    stat = path.stat()
    return {
        "title": path.name,
        "geoportal:kind": kind,
        "geoportal:path": storage.relative(path.parent) + "/" + path.name,
        "geoportal:size": stat.st_size,
        "geoportal:mtime": stat.st_mtime,
    }


def scene_item(storage: Storage, path: Path, info: SceneInfo | None = None) -> pystac.Item:
    """The STAC item of a scene file under ``datasets/``."""
    with open_scene(path) as dataset:
        info = info or describe_scene(dataset)
        statistics = band_statistics(dataset)
        when = _acquired(dataset, path)
        driver = dataset.driver
        wkt = dataset.crs.to_wkt()
        projected = dataset.crs.is_projected
    props = _base_properties(storage, path, "scene")
    props["geoportal:datetime_source"] = when["source"]
    item = pystac.Item(
        id=item_id(path),
        geometry=info.footprint,
        bbox=list(info.bounds_wgs84),
        datetime=when["datetime"],
        start_datetime=when.get("start"),
        end_datetime=when.get("end"),
        properties=props,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if info.epsg is not None:
        proj.code = f"EPSG:{info.epsg}"
    else:
        proj.wkt2 = wkt
    proj.bbox = list(info.bounds)
    proj.shape = [info.height, info.width]
    proj.transform = list(info.transform)
    media = {"GTiff": pystac.MediaType.GEOTIFF, "JP2OpenJPEG": pystac.MediaType.JPEG2000}
    asset = pystac.Asset(
        href=str(path),
        title=path.name,
        media_type=media.get(driver),
        roles=["data"],
    )
    item.add_asset("data", asset)
    EOExtension.ext(asset, add_if_missing=True).bands = [_eo_band(n) for n in info.band_names]
    # raster:bands' spatial_resolution is in metres; a geographic grid has none to give.
    resolution = float(abs(info.resolution[0])) if projected else None
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(
            nodata=_nodata_to_stac(info.nodata),
            data_type=_stac_dtype(info.dtype),
            spatial_resolution=resolution,
            statistics=stats,
        )
        for stats in statistics
    ]
    return item


def _labels_footprint(bounds: Sequence[float], crs: Any) -> tuple[dict[str, Any], list[float]]:
    from rasterio.warp import transform_geom

    left, bottom, right, top = bounds
    xs = np.linspace(left, right, 11)
    ys = np.linspace(bottom, top, 11)
    ring = (
        [(x, bottom) for x in xs]
        + [(right, y) for y in ys[1:]]
        + [(x, top) for x in xs[::-1][1:]]
        + [(left, y) for y in ys[::-1][1:]]
    )
    out = transform_geom(crs, WGS84, {"type": "Polygon", "coordinates": [ring]})
    coords = [[float(x), float(y)] for x, y in out["coordinates"][0]]
    lons, lats = [c[0] for c in coords], [c[1] for c in coords]
    return {"type": "Polygon", "coordinates": [coords]}, [
        min(lons),
        min(lats),
        max(lons),
        max(lats),
    ]


def labels_item(storage: Storage, path: Path) -> pystac.Item:
    """The STAC item (label extension) of a labelset under ``datasets/labels/``.

    The class field and class list come from the GeoPackage's layer metadata,
    which :func:`add_labels` writes; a labelset placed there by hand has none and
    is catalogued without classes.
    """
    import pyogrio
    from rasterio.crs import CRS

    info = pyogrio.read_info(path)
    meta = info.get("layer_metadata") or {}
    class_field = meta.get(META_CLASS_FIELD)
    classes: list[ClassInfo] = []
    counts: dict[str, int] = {}
    if class_field:
        given = classes_from_json(meta[META_CLASSES]) if meta.get(META_CLASSES) else None
        labelset = read_labels(path, class_field, classes=given, layer=info["layer_name"])
        classes = labelset.classes
        counts = labelset.counts()
    if not info.get("crs"):
        raise InvalidInputError(f"labels {path.name} have no CRS", field="labels")
    crs = CRS.from_user_input(info["crs"])
    bounds = [float(v) for v in info["total_bounds"]]
    footprint, bbox = _labels_footprint(bounds, crs)
    props = _base_properties(storage, path, "labels")
    props.update(
        {
            "geoportal:class_field": class_field,
            "geoportal:classes": classes_to_json(classes),
            "geoportal:features": int(info["features"]),
            "geoportal:counts": counts,
            "geoportal:geometry_type": info.get("geometry_type"),
        }
    )
    item = pystac.Item(
        id=item_id(path),
        geometry=footprint,
        bbox=bbox,
        datetime=dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC).replace(microsecond=0),
        properties=props,
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.wkt2 = crs.to_wkt()
    proj.bbox = bounds
    # The label extension's properties are set directly: pystac's LabelExtension class
    # is deprecated (the extension is unmaintained), the schema itself is stable.
    item.stac_extensions.append(LABEL_SCHEMA)
    item.properties.update(
        {
            "label:description": f"land-cover labels of {path.name}"
            + (f", classes in field '{class_field}'" if class_field else ""),
            "label:type": "vector",
            "label:properties": [class_field] if class_field else None,
            "label:tasks": ["classification", "segmentation"],
            "label:methods": ["manual"],
        }
    )
    if class_field:
        numeric = all(isinstance(v, int) for v in _field_values(labelset.features, class_field))
        values = [c.code for c in classes] if numeric else [c.name for c in classes]
        item.properties["label:classes"] = [{"name": class_field, "classes": values}]
        item.properties["label:overviews"] = [
            {
                "property_key": class_field,
                "counts": [{"name": n, "count": c} for n, c in counts.items()],
            }
        ]
    item.add_asset(
        "labels",
        pystac.Asset(
            href=str(path),
            title=path.name,
            media_type=pystac.MediaType.GEOPACKAGE,
            roles=["labels", "labels-vector"],
        ),
    )
    return item


def _field_values(frame: Any, column: str) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in frame[column].drop_duplicates()]


# -- scanning and writing -----------------------------------------------------------------


def _is_sidecar(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in _SIDECARS)


def _scan(storage: Storage) -> tuple[list[Path], list[Path]]:
    """(scene files, labelset files) under ``datasets/``, sorted."""
    root = storage.datasets_dir
    scenes: list[Path] = []
    labels: list[Path] = []
    if not root.is_dir():
        return scenes, labels
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and here / d != catalog_dir(storage)
        )
        in_labels = here == labels_dir(storage) or labels_dir(storage) in here.parents
        for name in sorted(filenames):
            path = here / name
            if name.startswith(".") or is_temporary(path) or not path.is_file():
                continue
            if in_labels:
                if path.suffix.lower() in VECTOR_SUFFIXES:
                    labels.append(path)
            elif not _is_sidecar(path):
                scenes.append(path)
    return scenes, labels


class _AtomicStacIO(DefaultStacIO):
    """pystac's file I/O, with every JSON file written under a temporary name first."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        atomic_write_text(href, txt)


@contextlib.contextmanager
def _locked(storage: Storage) -> Iterator[None]:
    folder = catalog_dir(storage)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_items(storage: Storage) -> list[pystac.Item]:
    root = catalog_dir(storage) / "catalog.json"
    if not root.exists():
        return []
    catalog = pystac.Catalog.from_file(str(root))
    return list(catalog.get_items(recursive=True))


def _reusable(storage: Storage) -> dict[str, dict[str, Any]]:
    """Existing item dicts by dataset path, for files unchanged since they were catalogued."""
    out: dict[str, dict[str, Any]] = {}
    try:
        items = _read_items(storage)
    except (OSError, ValueError, pystac.STACError, KeyError) as exc:
        log.warning("the existing catalog is unreadable (%s); rebuilding it from the files", exc)
        return out
    for item in items:
        path = item.properties.get("geoportal:path")
        if not isinstance(path, str):
            continue
        real = storage.root / path
        try:
            stat = real.stat()
        except OSError:
            continue
        if stat.st_size == item.properties.get(
            "geoportal:size"
        ) and stat.st_mtime == item.properties.get("geoportal:mtime"):
            data = item.to_dict(include_self_link=False, transform_hrefs=False)
            data["links"] = []
            for asset in data.get("assets", {}).values():
                asset["href"] = str(real)
            out[path] = data
    return out


def _unique_ids(items: list[pystac.Item]) -> None:
    seen: set[str] = set()
    for item in items:
        base, n = item.id, 2
        while item.id in seen:
            item.id = f"{base}_{n}"
            n += 1
        seen.add(item.id)


def _link_sources(label_items: list[pystac.Item], scene_items: list[pystac.Item]) -> None:
    from shapely.geometry import shape

    scenes = [(s, shape(s.geometry)) for s in scene_items if s.geometry]
    for item in label_items:
        if not item.geometry:
            continue
        footprint = shape(item.geometry)
        for scene, scene_shape in scenes:
            if footprint.intersects(scene_shape):
                link = pystac.Link("source", scene, pystac.MediaType.JSON, title=scene.id)
                link.extra_fields["label:assets"] = ["data"]
                item.add_link(link)


def _write(
    storage: Storage, scene_items: list[pystac.Item], label_items: list[pystac.Item]
) -> Path:
    folder = catalog_dir(storage)
    root = pystac.Catalog(
        id=CATALOG_ID,
        title="Geoportal datasets",
        description="The shared remote-sensing database of this geoportal: scenes and labelsets.",
    )
    children = {
        "scenes": pystac.Catalog(id="scenes", description="Scenes (rasters) in datasets/."),
        "labels": pystac.Catalog(id="labels", description="Labelsets in datasets/labels/."),
    }
    for key, items in (("scenes", scene_items), ("labels", label_items)):
        root.add_child(children[key])
        for item in sorted(items, key=lambda i: i.id):
            children[key].add_item(item)
    _link_sources(label_items, scene_items)
    root.normalize_hrefs(str(folder))
    for item in root.get_items(recursive=True):
        item.make_asset_hrefs_relative()
    root.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_AtomicStacIO())
    # Drop the folders of items that no longer exist (after the new catalog is in place).
    for key, items in (("scenes", scene_items), ("labels", label_items)):
        keep = {i.id for i in items}
        sub = folder / key
        for entry in sub.iterdir() if sub.is_dir() else ():
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
    return folder / "catalog.json"


def _entries(scene_items: Iterable[pystac.Item], label_items: Iterable[pystac.Item]) -> list:
    scenes = sorted((CatalogEntry.from_item(i) for i in scene_items), key=lambda e: e.id)
    labels = sorted((CatalogEntry.from_item(i) for i in label_items), key=lambda e: e.id)
    return scenes + labels


def _collect(
    storage: Storage,
    *,
    refresh: bool,
    progress: Progress | None,
    changed: Collection[str] = (),
) -> tuple[list[pystac.Item], list[pystac.Item], list[tuple[str, str]]]:
    scene_files, label_files = _scan(storage)
    reuse = {} if refresh else _reusable(storage)
    for rel in changed:  # just written: never trust an old item, even with equal size and time
        reuse.pop(rel, None)
    scene_items: list[pystac.Item] = []
    label_items: list[pystac.Item] = []
    skipped: list[tuple[str, str]] = []
    files = [(p, "scene") for p in scene_files] + [(p, "labels") for p in label_files]
    for n, (path, kind) in enumerate(files):
        rel = storage.relative(path.parent) + "/" + path.name
        _report(progress, n / max(len(files), 1), f"cataloguing {rel}")
        try:
            # A link that leads out of the storage is unreadable through the resolver.
            storage.relative(path)
            if rel in reuse:
                item = pystac.Item.from_dict(reuse[rel], preserve_dict=False)
            elif kind == "scene":
                item = scene_item(storage, path)
            else:
                item = labels_item(storage, path)
        except GeoportalError as exc:
            skipped.append((rel, exc.message))
            log.warning("not catalogued: %s: %s", rel, exc.message)
            continue
        except Exception as exc:  # a broken file must not stop the rest of the catalog
            skipped.append((rel, f"{type(exc).__name__}: {exc}"))
            log.warning("not catalogued: %s: %s", rel, exc)
            continue
        (scene_items if kind == "scene" else label_items).append(item)
    _unique_ids(scene_items)
    _unique_ids(label_items)
    return scene_items, label_items, skipped


# -- public API ---------------------------------------------------------------------------


def update_catalog(
    storage: Storage,
    *,
    refresh: bool = False,
    progress: Progress | None = None,
    changed: Collection[str] = (),
) -> CatalogUpdate:
    """Bring ``datasets/catalog/`` in line with the files under ``datasets/``.

    Args:
        storage: the storage whose ``datasets/`` to catalogue.
        refresh: describe every file again instead of reusing the items of
            unchanged files.
        progress: called with (fraction, message).
        changed: storage-relative paths to describe again in any case (files
            just replaced, whose size and time may happen to match the old ones).

    Returns:
        the catalogued entries and the files that could not be catalogued.
    """
    storage.ensure_layout()
    with _locked(storage):
        scene_items, label_items, skipped = _collect(
            storage, refresh=refresh, progress=progress, changed=changed
        )
        _report(progress, 0.95, "writing the STAC catalog")
        path = _write(storage, scene_items, label_items)
    _report(progress, 1.0, f"catalogued {len(scene_items)} scenes, {len(label_items)} labelsets")
    return CatalogUpdate(_entries(scene_items, label_items), skipped, path)


def list_datasets(storage: Storage) -> list[CatalogEntry]:
    """Every catalogued scene and labelset, scenes first.

    Reads the STAC catalog; where there is none yet, the files are described in
    memory (nothing is written, so any user may list).
    """
    root = catalog_dir(storage) / "catalog.json"
    if root.exists():
        try:
            items = _read_items(storage)
        except (OSError, ValueError, pystac.STACError, KeyError) as exc:
            log.warning("the catalog is unreadable (%s); describing the files instead", exc)
        else:
            scenes = [i for i in items if i.properties.get("geoportal:kind") == "scene"]
            labels = [i for i in items if i.properties.get("geoportal:kind") == "labels"]
            return _entries(scenes, labels)
    scene_items, label_items, _ = _collect(storage, refresh=True, progress=None)
    return _entries(scene_items, label_items)


def _check_target(
    storage: Storage, source: Path, target: Path, replace: bool, taken: set[Path]
) -> None:
    if source.name.startswith("."):
        raise InvalidInputError(
            f"{source}: hidden file names are not catalogued; rename it without the leading dot",
            field="files",
        )
    if target in taken:
        raise InvalidInputError(
            f"{source}: another given file is also named {target.name}; rename one of them",
            field="files",
        )
    if source.resolve() == target.resolve():
        raise InvalidInputError(
            f"{source} is already in datasets/; run 'geoportal datasets catalog' to catalogue it",
            field="files",
        )
    if target.exists() and not replace:
        raise InvalidInputError(
            f"{storage.relative(target.parent)}/{target.name} exists already: "
            "pass --replace to overwrite it",
            field="files",
        )
    if target.is_dir():
        raise InvalidInputError(f"{target} is a folder; rename {source.name}", field="files")


def _stage(source: Path, tmp: Path, link: bool) -> None:
    if not link:
        shutil.copy2(source, tmp)
        return
    try:
        os.link(source, tmp)
    except OSError as exc:
        raise InvalidInputError(
            f"{source} cannot be linked into the storage ({exc.strerror}): --link makes a hard "
            "link, which needs the file on the same filesystem as the storage; "
            "leave out --link to copy it",
            field="link",
        ) from None


def add_datasets(
    storage: Storage,
    files: Sequence[str | os.PathLike[str]],
    *,
    link: bool = False,
    replace: bool = False,
    progress: Progress | None = None,
) -> list[CatalogEntry]:
    """Validate scenes, copy (or hard-link) them into ``datasets/`` and catalogue them.

    Every file is validated before any is copied (rasterio opens it, it has a
    CRS, every block decodes), so one bad file refuses the whole call and
    leaves ``datasets/`` untouched. Files are staged under temporary names and
    renamed into place only when all of them are staged.

    Args:
        storage: the storage to add to.
        files: local raster files.
        link: hard-link instead of copying (same filesystem only). A symbolic
            link would lead out of the storage, which the resolver refuses.
        replace: overwrite scenes of the same name.
        progress: called with (fraction, message).

    Returns:
        the catalogue entries of the added scenes, in the order given.

    Raises:
        StorageNotFoundError: a file does not exist.
        InvalidRasterError: a file is not a raster, has no CRS, or is truncated.
        InvalidInputError: a scene of that name exists (without ``replace``).
    """
    if not files:
        raise InvalidInputError("give at least one raster file to add", field="files")
    storage.ensure_layout()
    plan: list[tuple[Path, Path]] = []
    taken: set[Path] = set()
    for n, given in enumerate(files):
        source = Path(given).expanduser()
        if not source.is_file():
            raise StorageNotFoundError(f"{source} does not exist or is not a file", field="files")
        target = storage.datasets_dir / source.name
        _check_target(storage, source, target, replace, taken)
        _report(progress, 0.4 * n / len(files), f"validating {source.name}")
        validate_scene(source)
        taken.add(target)
        plan.append((source, target))
    staged: list[tuple[Path, Path]] = []
    try:
        for n, (source, target) in enumerate(plan):
            verb = "linking" if link else "copying"
            _report(progress, 0.4 + 0.3 * n / len(plan), f"{verb} {source.name}")
            tmp = temporary_sibling(target)
            staged.append((tmp, target))
            _stage(source, tmp, link)
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    wanted = {storage.relative(t.parent) + "/" + t.name for _, t in plan}
    update = update_catalog(
        storage,
        progress=(lambda f, m: _report(progress, 0.7 + 0.3 * f, m)) if progress else None,
        changed=wanted,
    )
    by_path = {e.path: e for e in update.entries}
    missing = [p for p in wanted if p not in by_path]
    if missing:
        reasons = dict(update.skipped)
        raise InvalidInputError(
            "added but not catalogued: "
            + "; ".join(f"{p}: {reasons.get(p, 'unknown reason')}" for p in missing),
            field="files",
        )
    return [by_path[storage.relative(t.parent) + "/" + t.name] for _, t in plan]


def add_labels(
    storage: Storage,
    file: str | os.PathLike[str],
    class_field: str,
    *,
    replace: bool = False,
    layer: str | None = None,
    progress: Progress | None = None,
) -> CatalogEntry:
    """Validate a labelset, store it as ``datasets/labels/<stem>.gpkg`` and catalogue it.

    The file (GeoPackage, GeoJSON or Shapefile) is read through
    :func:`geoportal.labels.read_labels`, so a missing class field, an empty file
    or a missing CRS is refused before anything is written. The GeoPackage keeps
    the original fields and CRS; its layer metadata records the class field and
    classes, so the catalog can be rebuilt from the file alone.

    Raises:
        LabelsNotFoundError: the file is missing or has no usable features.
        InvalidInputError: the class field is missing or unusable, or the
            labelset exists already (without ``replace``).
    """
    source = Path(file).expanduser()
    _report(progress, 0.0, f"reading {source.name}")
    labelset = read_labels(source, class_field, layer=layer)
    stem = item_id(source)
    target = labels_dir(storage) / f"{stem}.gpkg"
    if target.exists() and not replace:
        raise InvalidInputError(
            f"datasets/{LABELS_DIR}/{target.name} exists already: pass --replace to overwrite it",
            field="labels",
        )
    if source.resolve() == target.resolve():
        raise InvalidInputError(
            f"{source} is already in datasets/{LABELS_DIR}/; run 'geoportal datasets catalog'",
            field="labels",
        )
    storage.ensure_layout()
    frame = labelset.features.drop(columns=[CLASS_CODE])
    _report(progress, 0.3, f"writing datasets/{LABELS_DIR}/{target.name}")
    with atomic_path(target) as tmp:
        # GDAL names a GeoPackage layer after the file; the temporary name is not the
        # final one, so the layer is named explicitly.
        frame.to_file(
            tmp,
            driver="GPKG",
            layer=stem,
            layer_metadata={
                META_CLASS_FIELD: class_field,
                META_CLASSES: json.dumps(classes_to_json(labelset.classes)),
            },
        )
    rel = f"{storage.relative(target.parent)}/{target.name}"
    update = update_catalog(
        storage,
        progress=(lambda f, m: _report(progress, 0.5 + 0.5 * f, m)) if progress else None,
        changed=[rel],
    )
    for entry in update.entries:
        if entry.path == rel:
            return entry
    reasons = dict(update.skipped)
    raise InvalidInputError(
        f"{rel} was written but not catalogued: {reasons.get(rel, 'unknown reason')}",
        field="labels",
    )
