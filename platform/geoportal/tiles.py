"""Web-map tiles of any scene in the storage, rendered on demand.

A tile is a 256×256 PNG in the WebMercatorQuad grid (EPSG:3857, the grid of
Leaflet and every web map). :class:`TileRenderer` reads only the window a tile
needs, from the best overview, through rio-tiler (which reprojects with a
``WarpedVRT``); the whole raster is never read. Opacity is left to the client
(a Leaflet layer option), so one tile serves every opacity.

Band combination and stretch are request parameters: ``bands`` picks one or
three 1-based band indexes and ``stretch`` the low/high percentiles mapped to
0 and 255 per band. Percentiles come from a per-scene sample of valid pixels
that is computed once (from overviews or a decimated/sampled read, never the
full-resolution raster) and cached by path, size and modification time.

Classification rasters (single band with a colour table or ``GEOPORTAL_CLASSES``
metadata) are drawn with their own colours, nodata (255) and "no label" (0)
transparent, and no stretch.

Every location passes :meth:`geoportal.storage.Storage.resolve` for the caller,
so a user cannot tile another user's private rasters.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window, from_bounds

from geoportal.classes import CLASS_NODATA, NO_LABEL, ClassInfo, classes_from_json, make_classes
from geoportal.errors import GeoportalError, InvalidInputError, InvalidRasterError
from geoportal.raster import band_names, open_scene
from geoportal.storage import Storage

TILE_SIZE = 256
MAX_ZOOM = 24
CLASSES_TAG = "GEOPORTAL_CLASSES"
_SAMPLE_PIXELS = 1 << 20  # pixels per band kept for percentiles
_STATS_CACHE_SIZE = 32
_READERS_PER_THREAD = 8


class TileStyle(BaseModel):
    """How a scene is drawn: which bands and which stretch.

    Attributes:
        bands: one band (grey) or three (red, green, blue), 1-based; empty = the scene's default.
        stretch: low and high percentiles of the valid pixels mapped to 0 and 255.
        ranges: explicit (low, high) value ranges per band; they override ``stretch``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bands: tuple[int, ...] = Field(
        (), description="1 or 3 band indexes (1-based); empty picks the scene's default."
    )
    stretch: tuple[float, float] = Field(
        (2.0, 98.0), description="Percentiles (0..100) mapped to black and white per band."
    )
    ranges: tuple[tuple[float, float], ...] = Field(
        (), description="Explicit value range per band; overrides the percentile stretch."
    )

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) not in (0, 1, 3):
            raise ValueError("give one band (grey) or three bands (red,green,blue)")
        if any(b < 1 for b in value):
            raise ValueError("band indexes start at 1")
        return value

    @field_validator("stretch")
    @classmethod
    def _check_stretch(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError("stretch needs 0 <= low < high <= 100 (percentiles)")
        return value

    @classmethod
    def from_query(
        cls, bands: str | None = None, stretch: str | None = None, ranges: str | None = None
    ) -> TileStyle:
        """Parse the text form of URL queries: ``bands=4,3,2&stretch=2,98&ranges=0,1;0,1;0,1``.

        Raises:
            InvalidInputError: naming the parameter that is malformed.
        """
        values: dict[str, Any] = {}
        try:
            if bands:
                values["bands"] = tuple(int(b) for b in bands.split(","))
            if stretch:
                low, high = (float(v) for v in stretch.split(","))
                values["stretch"] = (low, high)
            if ranges:
                values["ranges"] = tuple(
                    tuple(float(v) for v in part.split(",")) for part in ranges.split(";")
                )
        except ValueError:
            raise InvalidInputError(
                "tile parameters are malformed: use bands=4,3,2 stretch=2,98 "
                "ranges=lo,hi;lo,hi;lo,hi",
                field="bands" if "bands" not in values else "stretch",
            ) from None
        try:
            return cls(**values)
        except ValueError as exc:
            name = _first_field(exc)
            raise InvalidInputError(f"{name}: {_first_message(exc)}", field=name) from None

    def query(self) -> str:
        """The URL query that :meth:`from_query` reads back."""
        parts = []
        if self.bands:
            parts.append("bands=" + ",".join(str(b) for b in self.bands))
        parts.append(f"stretch={self.stretch[0]:g},{self.stretch[1]:g}")
        if self.ranges:
            parts.append("ranges=" + ";".join(f"{lo:g},{hi:g}" for lo, hi in self.ranges))
        return "&".join(parts)


def _first_field(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        loc = errors()[0].get("loc") or ("style",)
        return str(loc[0])
    return "style"


def _first_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return str(errors()[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


@dataclass(frozen=True)
class SceneStats:
    """A sorted sample of valid values per band, enough for any percentile."""

    samples: dict[int, np.ndarray] = field(repr=False)

    def percentile_range(self, band: int, low: float, high: float) -> tuple[float, float]:
        values = self.samples[band]
        if values.size == 0:
            return 0.0, 1.0
        # The sample is sorted: a percentile is an index (linear interpolation, as numpy's).
        lo, hi = (_sorted_percentile(values, q) for q in (low, high))
        if hi <= lo:
            hi = lo + 1.0
        return lo, hi


def _sorted_percentile(values: np.ndarray, q: float) -> float:
    position = q / 100.0 * (values.size - 1)
    below = int(math.floor(position))
    above = min(below + 1, values.size - 1)
    frac = position - below
    return float(values[below] * (1.0 - frac) + values[above] * frac)


def _valid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    keep = (
        np.isfinite(values)
        if np.issubdtype(values.dtype, np.floating)
        else np.ones_like(values, dtype=bool)
    )
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        keep &= values != nodata
    return values[keep]


def compute_stats(dataset: DatasetReader, max_pixels: int = _SAMPLE_PIXELS) -> SceneStats:
    """Sample every band's valid values without reading the full-resolution raster.

    Small rasters and rasters with overviews are read decimated (GDAL then
    serves the read from the best overview). Large rasters without overviews
    are sampled as a regular grid of small windows, so cost stays bounded.
    """
    width, height = dataset.width, dataset.height
    scale = max(1.0, math.sqrt(width * height / max_pixels))
    out_w, out_h = max(1, int(width / scale)), max(1, int(height / scale))
    has_overviews = bool(dataset.overviews(1))
    if scale <= 1.0 or has_overviews or width * height <= 16 * max_pixels:
        data = dataset.read(out_shape=(dataset.count, out_h, out_w))
    else:
        side = 64
        n = max(1, int(math.sqrt(max_pixels / (side * side))))
        rows = np.linspace(0, height - side, n).astype(int)
        cols = np.linspace(0, width - side, n).astype(int)
        pieces = [
            dataset.read(window=Window(int(c), int(r), side, side)) for r in rows for c in cols
        ]
        data = np.concatenate([p.reshape(dataset.count, -1) for p in pieces], axis=1)
    flat = data.reshape(dataset.count, -1)
    masks = None
    if dataset.nodata is None and any(m for m in _has_internal_mask(dataset)):
        masks = dataset.read_masks(out_shape=(dataset.count, out_h, out_w)).reshape(
            dataset.count, -1
        )
    samples: dict[int, np.ndarray] = {}
    for i in range(dataset.count):
        values = flat[i]
        if masks is not None and masks.shape[1] == values.size:
            values = values[masks[i] > 0]
        samples[i + 1] = np.sort(_valid(values, dataset.nodata).astype("float64"))
    return SceneStats(samples)


def _has_internal_mask(dataset: DatasetReader) -> list[bool]:
    from rasterio.enums import MaskFlags

    return [MaskFlags.per_dataset in flags for flags in dataset.mask_flag_enums]


def read_classes(dataset: DatasetReader) -> list[ClassInfo] | None:
    """The classes of a classification raster, or None for an image.

    A raster is a class raster when it carries ``GEOPORTAL_CLASSES`` metadata,
    or is a single uint8 band with a colour table.
    """
    tags = dataset.tags()
    if CLASSES_TAG in tags:
        try:
            return classes_from_json(json.loads(tags[CLASSES_TAG]))
        except (ValueError, KeyError, TypeError):
            pass
    if dataset.count == 1 and dataset.dtypes[0] == "uint8":
        try:
            cmap = dataset.colormap(1)
        except ValueError:
            return None
        used = {
            code: "#{:02x}{:02x}{:02x}".format(*rgba[:3])
            for code, rgba in cmap.items()
            if 1 <= code <= 254 and (rgba[3] if len(rgba) > 3 else 255) > 0 and any(rgba[:3])
        }
        if used:
            names = {code: f"class {code}" for code in used}
            return make_classes(names, used)
    return None


def default_bands(count: int) -> tuple[int, ...]:
    """A sensible first view: RGB for 3–4 bands, 3-2-1 (Landsat-like order) for more, else grey."""
    if count >= 5:
        return (3, 2, 1)
    if count >= 3:
        return (1, 2, 3)
    return (1,)


@dataclass(frozen=True)
class SceneSummary:
    """What a client needs to show a scene: where it is and what it holds."""

    location: str
    bounds_wgs84: tuple[float, float, float, float]
    width: int
    height: int
    count: int
    dtype: str
    band_names: tuple[str, ...]
    default_bands: tuple[int, ...]
    classes: list[ClassInfo] | None
    minzoom: int
    maxzoom: int

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        data["classes"] = [asdict(c) for c in self.classes] if self.classes is not None else None
        return data


def _empty_png(size: int = TILE_SIZE) -> bytes:

    buffer = io.BytesIO()
    Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


class TileRenderer:
    """Renders PNG tiles of storage scenes for a caller; thread-safe.

    Args:
        storage: the storage every location is resolved in.
        tile_size: tile edge in pixels (256 for Leaflet).
    """

    def __init__(self, storage: Storage, *, tile_size: int = TILE_SIZE) -> None:
        self.storage = storage
        self.tile_size = tile_size
        self._lock = threading.Lock()
        self._stats: OrderedDict[tuple[str, int, int], SceneStats] = OrderedDict()
        self._meta: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()
        self._empty = _empty_png(tile_size)
        self._local = threading.local()

    # -- locating ---------------------------------------------------------------------------

    def resolve(self, user: str, location: str) -> Path:
        """The real path of ``location`` if ``user`` may read it (raises otherwise)."""
        return self.storage.resolve(user, location, must_exist=True, field="scene")

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        st = os.stat(path)
        return str(path), st.st_size, st.st_mtime_ns

    def _cached(self, cache: OrderedDict, key: tuple[str, int, int]) -> Any:  # type: ignore[type-arg]
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        return None

    def _store(self, cache: OrderedDict, key: tuple[str, int, int], value: Any) -> None:  # type: ignore[type-arg]
        with self._lock:
            cache[key] = value
            while len(cache) > _STATS_CACHE_SIZE:
                cache.popitem(last=False)

    def _metadata(self, path: Path) -> dict[str, Any]:
        key = self._key(path)
        meta = self._cached(self._meta, key)
        if meta is None:
            with open_scene(path) as dataset:
                meta = {
                    "count": dataset.count,
                    "classes": read_classes(dataset),
                    "colormap": _colormap(dataset),
                }
            self._store(self._meta, key, meta)
        return meta

    def stats(self, path: Path) -> SceneStats:
        """The cached band sample of a real path (computed on first use)."""
        key = self._key(path)
        stats = self._cached(self._stats, key)
        if stats is None:
            with open_scene(path) as dataset:
                stats = compute_stats(dataset)
            self._store(self._stats, key, stats)
        return stats

    # -- public API ---------------------------------------------------------------------------

    def summary(self, user: str, location: str) -> SceneSummary:
        """Bounds, bands and classes of a scene the user may read."""
        from rasterio.warp import transform_bounds

        path = self.resolve(user, location)
        with open_scene(path) as dataset:
            bounds = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21)
            classes = read_classes(dataset)
            res_m = _resolution_m(dataset)
            maxzoom = int(min(MAX_ZOOM, max(0, math.ceil(math.log2(156543.03 / res_m)))))
            span = max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1e-9)
            minzoom = int(max(0, min(maxzoom, math.floor(math.log2(360.0 / span)) - 2)))
            return SceneSummary(
                location=location,
                bounds_wgs84=tuple(float(b) for b in bounds),  # type: ignore[arg-type]
                width=dataset.width,
                height=dataset.height,
                count=dataset.count,
                dtype=dataset.dtypes[0],
                band_names=band_names(dataset),
                default_bands=(1,) if classes else default_bands(dataset.count),
                classes=classes,
                minzoom=minzoom,
                maxzoom=maxzoom,
            )

    def band_ranges(
        self, path: Path, style: TileStyle, bands: Sequence[int]
    ) -> list[tuple[float, float]]:
        """The value range mapped to 0..255 for each band of ``bands``."""
        if style.ranges:
            if len(style.ranges) not in (1, len(bands)):
                raise InvalidInputError(
                    f"ranges: give one range or one per band ({len(bands)})", field="ranges"
                )
            ranges = list(style.ranges) * (len(bands) if len(style.ranges) == 1 else 1)
            for lo, hi in ranges:
                if hi <= lo:
                    raise InvalidInputError("ranges: each needs low < high", field="ranges")
            return ranges
        stats = self.stats(path)
        return [stats.percentile_range(b, *style.stretch) for b in bands]

    def tile(
        self, user: str, location: str, z: int, x: int, y: int, style: TileStyle | None = None
    ) -> bytes:
        """One PNG tile (transparent outside the scene and on nodata).

        Raises:
            AccessDeniedError: ``user`` may not read ``location``.
            StorageNotFoundError: nothing is there.
            InvalidInputError: bad tile address or style.
            InvalidRasterError: not a raster.
        """
        style = style or TileStyle()
        if not 0 <= z <= MAX_ZOOM or not (0 <= x < 2**z and 0 <= y < 2**z):
            raise InvalidInputError(
                f"tile {z}/{x}/{y} does not exist: need 0<=z<={MAX_ZOOM}, 0<=x,y<2**z",
                field="tile",
            )
        path = self.resolve(user, location)
        meta = self._metadata(path)
        count = meta["count"]
        classes = meta["classes"]
        bands = style.bands or ((1,) if classes else default_bands(count))
        if max(bands) > count:
            raise InvalidInputError(
                f"bands {list(bands)}: the scene has {count} band(s)", field="bands"
            )
        try:
            data, valid = self._source(path).read_tile(z, x, y, bands, self.tile_size)
        except GeoportalError:
            raise
        except Exception as exc:  # rasterio raises many types for unreadable data
            raise InvalidRasterError(
                f"scene {location}: tile {z}/{x}/{y} cannot be rendered ({exc})", field="scene"
            ) from None
        if data is None or not valid.any():
            return self._empty
        if classes is not None:
            return render_classes(data[0], valid, classes, meta["colormap"])
        ranges = self.band_ranges(path, style, bands)
        return encode_png(rescale(data, ranges), valid)

    def _source(self, path: Path) -> _TileSource:
        """The open scene and its Web-Mercator view, kept per thread (GDAL handles are
        not thread-safe) so that a tile pays neither the open nor the warp set-up."""
        key = self._key(path)
        sources: OrderedDict[tuple[str, int, int], _TileSource] | None = getattr(
            self._local, "sources", None
        )
        if sources is None:
            sources = self._local.sources = OrderedDict()
        source = sources.get(key)
        if source is None:
            for old in [k for k in sources if k[0] == key[0]]:
                sources.pop(old).close()
            source = sources[key] = _TileSource(path)
            while len(sources) > _READERS_PER_THREAD:
                sources.popitem(last=False)[1].close()
        else:
            sources.move_to_end(key)
        return source


_ORIGIN = 20037508.342789244
_VRT_REFINE = 4  # half the Web Mercator world width, metres


class _TileSource:
    """A scene opened once with a ``WarpedVRT`` to EPSG:3857 over it.

    Reading a tile is then one windowed, resampled read of the VRT: GDAL picks
    the VRT's implicit overview that matches the zoom (mapped onto the source's
    overviews), so low zooms read overviews, never the full-resolution raster.
    Keeping the VRT open avoids recomputing the warp transform per tile, which
    costs far more than the read itself (see ``docs/map.md``).
    """

    def __init__(self, path: Path) -> None:
        self.dataset = open_scene(path)
        self.has_nodata = self.dataset.nodata is not None
        src = self.dataset
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:3857", src.width, src.height, *src.bounds
        )
        # A grid finer than the source's: tiles are cut from it with nearest
        # resampling, so its cells bound the position error (a quarter pixel).
        f = _VRT_REFINE
        self.vrt = WarpedVRT(
            src, crs="EPSG:3857", resampling=Resampling.nearest, add_alpha=not self.has_nodata,
            transform=transform * Affine.scale(1 / f), width=width * f, height=height * f,
        )  # fmt: skip

    def close(self) -> None:
        self.vrt.close()
        self.dataset.close()

    def read_tile(
        self, z: int, x: int, y: int, bands: Sequence[int], size: int
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """(bands, size, size) values and the (size, size) valid mask of one tile."""
        vrt = self.vrt
        span = 2 * _ORIGIN / (1 << z)
        left, top = -_ORIGIN + x * span, _ORIGIN - y * span
        window = from_bounds(left, top - span, left + span, top, transform=vrt.transform)
        c0, r0 = max(0.0, window.col_off), max(0.0, window.row_off)
        c1 = min(float(vrt.width), window.col_off + window.width)
        r1 = min(float(vrt.height), window.row_off + window.height)
        empty = np.zeros((size, size), dtype=bool)
        if c1 <= c0 or r1 <= r0:
            return None, empty
        sx, sy = size / window.width, size / window.height
        x0, y0 = int(round((c0 - window.col_off) * sx)), int(round((r0 - window.row_off) * sy))
        x1, y1 = int(round((c1 - window.col_off) * sx)), int(round((r1 - window.row_off) * sy))
        if x1 <= x0 or y1 <= y0:
            return None, empty
        part = Window(c0, r0, c1 - c0, r1 - r0)
        indexes = list(bands) + ([] if self.has_nodata else [vrt.count])
        values = vrt.read(
            indexes=indexes, window=part, out_shape=(len(indexes), y1 - y0, x1 - x0),
            resampling=Resampling.nearest, masked=self.has_nodata,
        )  # fmt: skip
        if self.has_nodata:
            ok = ~np.ma.getmaskarray(values).any(axis=0)
            values = np.ma.getdata(values)
        else:
            ok = values[-1] > 0
            values = values[:-1]
        if np.issubdtype(values.dtype, np.floating):
            ok &= np.isfinite(values).all(axis=0)
        data = np.zeros((len(bands), size, size), dtype=values.dtype)
        data[:, y0:y1, x0:x1] = values
        valid = empty.copy()
        valid[y0:y1, x0:x1] = ok
        return data, valid


def rescale(data: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Map each band's (low, high) linearly onto 0..255 (uint8, clipped)."""
    out = np.empty(data.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(ranges):
        scaled = (data[i].astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
        np.clip(scaled, 0, 255, out=scaled)
        out[i] = scaled
    return out


def encode_png(data: np.ndarray, valid: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG of uint8 bands (1: grey + alpha, 3: RGBA); ``valid`` False is transparent.

    zlib level 1: tiles are small and made on demand; it is several times
    quicker than the default level and barely larger.
    """
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    if data.shape[0] == 1:
        pixels, mode = np.dstack([data[0], alpha]), "LA"
    else:
        pixels, mode = np.dstack([data[0], data[1], data[2], alpha]), "RGBA"
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode=mode).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def _resolution_m(dataset: DatasetReader) -> float:
    res = min(dataset.res)
    if dataset.crs.is_geographic:
        return res * 111_320.0
    factor = dataset.crs.linear_units_factor[1] if dataset.crs.linear_units_factor else 1.0
    return res * factor


def _colormap(dataset: DatasetReader) -> dict[int, tuple[int, int, int, int]] | None:
    if dataset.count != 1:
        return None
    try:
        return {int(k): tuple(v) for k, v in dataset.colormap(1).items()}  # type: ignore[misc]
    except ValueError:
        return None


def render_classes(
    codes: np.ndarray,
    valid: np.ndarray,
    classes: list[ClassInfo],
    colormap: dict[int, tuple[int, int, int, int]] | None,
) -> bytes:
    """RGBA PNG of class codes in their colours; no label, nodata and invalid are clear."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    if colormap:
        for code, entry in colormap.items():
            if 0 <= code < 256:
                lut[code] = entry[:4] if len(entry) >= 4 else (*entry[:3], 255)
    for c in classes:
        lut[c.code] = (*c.rgb, 255)
    lut[NO_LABEL, 3] = 0
    lut[CLASS_NODATA, 3] = 0
    rgba = lut[np.clip(np.asarray(codes).astype(np.int64), 0, 255)]
    rgba[~valid, 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def tile_url_template(base_url: str, location: str, style: TileStyle | None = None) -> str:
    """The ``{z}/{x}/{y}`` URL template Leaflet needs for ``location`` on a tile service."""
    from urllib.parse import quote

    style = style or TileStyle()
    return (
        f"{base_url.rstrip('/')}/tiles/{{z}}/{{x}}/{{y}}.png?scene={quote(location, safe='/')}"
        f"&{style.query()}"
    )
