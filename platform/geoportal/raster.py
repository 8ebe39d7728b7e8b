"""Open a scene from a local path, a storage path or an http(s) URL, and describe it.

A scene is any raster GDAL reads that has a CRS. :func:`describe_scene` gives the
facts every later step needs (grid, bands, dtype, nodata, footprint, area);
:func:`validate_scene` additionally proves the file is complete by decoding
blocks, which is what ingest needs: a truncated GeoTIFF opens fine and fails
only when its last blocks are read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.warp import transform_geom
from rasterio.windows import Window

from geoportal.errors import InvalidRasterError, StorageNotFoundError

WGS84 = CRS.from_epsg(4326)


def gdal_path(location: str | os.PathLike[str]) -> str:
    """The path GDAL opens: http(s) URLs go through ``/vsicurl/``."""
    text = os.fspath(location)
    if urlsplit(text).scheme.lower() in ("http", "https"):
        return "/vsicurl/" + text
    return text


def _looks_like_tiff(path: str) -> bool:
    # A GeoTIFF whose directory lies at its end (GDAL's usual layout) fails at open
    # when cut short; its magic bytes tell "truncated TIFF" from "not a raster".
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def open_scene(location: str | os.PathLike[str]) -> DatasetReader:
    """Open a scene for reading, with errors that say what is wrong.

    ``location`` is a real path (resolve user input with
    :meth:`geoportal.storage.Storage.resolve` first) or an http(s) URL.

    Raises:
        StorageNotFoundError: a local path that does not exist.
        InvalidRasterError: GDAL cannot read it as a raster, or it has no CRS.
    """
    text = os.fspath(location)
    is_url = text.startswith("/vsicurl/") or urlsplit(text).scheme.lower() in ("http", "https")
    if not is_url and not Path(text).exists():
        raise StorageNotFoundError(f"raster {text} does not exist", field="raster")
    try:
        dataset = rasterio.open(gdal_path(text))
    except (RasterioIOError, RasterioError) as exc:
        if not is_url and _looks_like_tiff(text):
            raise InvalidRasterError(
                f"{Path(text).name} is a TIFF file but damaged or truncated: GDAL cannot read "
                f"its structure ({exc}); copy or download it again",
                field="raster",
            ) from None
        raise InvalidRasterError(
            f"{Path(text).name} is not a raster GDAL can read ({exc})", field="raster"
        ) from None
    if dataset.crs is None:
        dataset.close()
        raise InvalidRasterError(
            f"{Path(text).name} has no CRS: georeference it (e.g. gdal_edit.py -a_srs EPSG:…)",
            field="raster",
        )
    return dataset


@dataclass(frozen=True)
class SceneInfo:
    """What a scene is: grid, bands and where it lies.

    ``footprint`` is a GeoJSON polygon in WGS84 (lon/lat), densified along the
    edges so that it follows the projection's curvature.
    """

    path: str
    driver: str
    crs: str
    epsg: int | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]
    bounds: tuple[float, float, float, float]
    bounds_wgs84: tuple[float, float, float, float]
    footprint: dict[str, Any]
    resolution: tuple[float, float]
    area_km2: float
    block_shape: tuple[int, int]

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def band_names(dataset: DatasetReader) -> tuple[str, ...]:
    """Band descriptions where set, else ``B1``, ``B2``, …"""
    return tuple(
        (desc or f"B{i + 1}")
        for i, desc in enumerate(dataset.descriptions or [None] * dataset.count)
    )


def _footprint(dataset: DatasetReader, densify: int = 21) -> dict[str, Any]:
    left, bottom, right, top = dataset.bounds
    xs = np.linspace(left, right, densify)
    ys = np.linspace(bottom, top, densify)
    ring = (
        [(x, bottom) for x in xs]
        + [(right, y) for y in ys[1:]]
        + [(x, top) for x in xs[::-1][1:]]
        + [(left, y) for y in ys[::-1][1:]]
    )
    geom = {"type": "Polygon", "coordinates": [ring]}
    out = transform_geom(dataset.crs, WGS84, geom)
    return {
        "type": "Polygon",
        "coordinates": [[tuple(map(float, p)) for p in out["coordinates"][0]]],
    }


def _area_km2(dataset: DatasetReader, footprint: dict[str, Any]) -> float:
    crs = dataset.crs
    if crs.is_projected:
        factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
        res_x, res_y = dataset.res
        return float(dataset.width * dataset.height * res_x * res_y * factor * factor / 1e6)
    from pyproj import Geod

    lons, lats = zip(*footprint["coordinates"][0], strict=True)
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area) / 1e6


def describe_scene(location: str | os.PathLike[str] | DatasetReader) -> SceneInfo:
    """Describe a scene (a path, URL, or an open dataset)."""
    if isinstance(location, DatasetReader):
        return _describe(location)
    with open_scene(location) as dataset:
        return _describe(dataset)


def _describe(dataset: DatasetReader) -> SceneInfo:
    footprint = _footprint(dataset)
    lons = [p[0] for p in footprint["coordinates"][0]]
    lats = [p[1] for p in footprint["coordinates"][0]]
    t = dataset.transform
    return SceneInfo(
        path=dataset.name,
        driver=dataset.driver,
        crs=dataset.crs.to_string(),
        epsg=dataset.crs.to_epsg(),
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        width=dataset.width,
        height=dataset.height,
        count=dataset.count,
        dtype=dataset.dtypes[0],
        nodata=dataset.nodata,
        band_names=band_names(dataset),
        bounds=tuple(dataset.bounds),  # type: ignore[arg-type]
        bounds_wgs84=(min(lons), min(lats), max(lons), max(lats)),
        footprint=footprint,
        resolution=tuple(dataset.res),  # type: ignore[arg-type]
        area_km2=_area_km2(dataset, footprint),
        block_shape=tuple(dataset.block_shapes[0]) if dataset.block_shapes else (1, dataset.width),  # type: ignore[arg-type]
    )


def validate_scene(location: str | os.PathLike[str]) -> SceneInfo:
    """Open, describe and fully decode a scene, proving it is complete.

    Raises:
        InvalidRasterError: not a raster, no CRS, or a block fails to decode
            (a truncated or corrupt file).
    """
    with open_scene(location) as dataset:
        info = _describe(dataset)
        name = Path(os.fspath(location)).name
        try:
            for _, window in dataset.block_windows(1):
                dataset.read(window=window)
        except (RasterioIOError, RasterioError) as exc:
            raise InvalidRasterError(
                f"{name} is damaged or truncated: a block at row {window.row_off}, "
                f"column {window.col_off} cannot be decoded ({exc})",
                field="raster",
            ) from None
    return info


def valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels (H, W) that are valid in every band of ``data`` (C, H, W)."""
    mask = np.ones(data.shape[-2:], dtype=bool)
    if nodata is not None:
        if isinstance(nodata, float) and math.isnan(nodata):
            mask &= ~np.isnan(data).any(axis=0)
        else:
            mask &= ~(data == nodata).any(axis=0)
    if np.issubdtype(data.dtype, np.floating):
        mask &= np.isfinite(data).all(axis=0)
    return mask


def read_window(dataset: DatasetReader, window: Window, *, boundless: bool = False) -> np.ndarray:
    """Read all bands of ``window`` as (C, H, W); boundless reads fill with nodata."""
    if boundless:
        fill = dataset.nodata if dataset.nodata is not None else 0
        return dataset.read(window=window, boundless=True, fill_value=fill)
    return dataset.read(window=window)
