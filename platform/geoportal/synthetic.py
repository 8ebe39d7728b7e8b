"""Generated scenes with known land cover, for demos without data and for tests.

The scene is a Voronoi mosaic of class regions, each class with its own
spectral signature, plus spatially smooth noise; so neighbouring pixels are
correlated as in real imagery and a model can learn the classes. The matching
labels are polygons sampled inside the regions, in a CRS of the caller's choice
(default: another CRS than the scene's, as happens with real labels).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Point, box

from geoportal.atomic import atomic_path
from geoportal.classes import make_classes

CLASS_NAMES = ("water", "forest", "cropland", "urban", "bare")


@dataclass(frozen=True)
class SyntheticScene:
    """Where a generated scene and its labels were written, and the truth raster."""

    raster: Path
    labels: Path
    truth: np.ndarray
    class_field: str = "label"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    coarse = rng.normal(size=(shape[0] // scale + 2, shape[1] // scale + 2))
    rows = np.linspace(0, coarse.shape[0] - 1.001, shape[0])
    cols = np.linspace(0, coarse.shape[1] - 1.001, shape[1])
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    a = coarse[r0][:, c0]
    b = coarse[r0][:, c0 + 1]
    c = coarse[r0 + 1][:, c0]
    d = coarse[r0 + 1][:, c0 + 1]
    return a * (1 - fr) * (1 - fc) + b * (1 - fr) * fc + c * fr * (1 - fc) + d * fr * fc


def make_scene(
    folder: str | os.PathLike[str],
    *,
    width: int = 300,
    height: int = 260,
    bands: int = 4,
    dtype: str = "uint16",
    n_classes: int = 4,
    crs: str = "EPSG:32618",
    labels_crs: str = "EPSG:4326",
    nodata: float | None = 0,
    nodata_margin: int = 6,
    pixel_size: float = 10.0,
    seed: int = 0,
    labels_per_class: int = 6,
    name: str = "synthetic",
) -> SyntheticScene:
    """Write ``<name>.tif`` and ``<name>_labels.gpkg`` into ``folder``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = min(n_classes, len(CLASS_NAMES))
    seeds = rng.uniform((0, 0), (height, width), size=(n_classes * 4, 2))
    seed_class = np.arange(len(seeds)) % n_classes + 1
    rr, cc = np.mgrid[0:height, 0:width]
    dist = (rr[..., None] - seeds[:, 0]) ** 2 + (cc[..., None] - seeds[:, 1]) ** 2
    truth = seed_class[np.argmin(dist, axis=-1)].astype(np.uint8)
    signatures = rng.uniform(0.15, 0.85, size=(n_classes + 1, bands))
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    top = min(info.max, 10000) if info else 1.0
    data = np.empty((bands, height, width), dtype=np.float64)
    for b in range(bands):
        data[b] = signatures[truth, b] + 0.06 * _smooth_noise(rng, (height, width), 12)
        data[b] += 0.02 * rng.normal(size=(height, width))
    data = np.clip(data, 0.01, 1.0) * top
    out = data.astype(dtype)
    if nodata is not None and nodata_margin:
        out[:, :nodata_margin, :] = nodata
        out[:, :, -nodata_margin:] = nodata
    transform = Affine(pixel_size, 0, 500000.0, 0, -pixel_size, 4100000.0)
    raster = folder / f"{name}.tif"
    profile = dict(
        driver="GTiff", width=width, height=height, count=bands, dtype=dtype, crs=crs,
        transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate",
    )  # fmt: skip
    with atomic_path(raster) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(out)
        dst.descriptions = tuple(f"band {i + 1}" for i in range(bands))
    # Labels: small squares and points well inside their class region.
    geoms, names = [], []
    inner = slice(nodata_margin + 4, None)
    for code in range(1, n_classes + 1):
        rows, cols = np.nonzero(truth[inner, inner] == code)
        if len(rows) == 0:
            continue
        picks = rng.choice(len(rows), size=min(labels_per_class * 3, len(rows)), replace=False)
        made = 0
        for i in picks:
            r, c = rows[i] + nodata_margin + 4, cols[i] + nodata_margin + 4
            r0, r1, c0, c1 = r - 3, r + 4, c - 3, c + 4
            if r1 >= height - nodata_margin or c1 >= width - nodata_margin:
                continue
            if not (truth[r0:r1, c0:c1] == code).all():
                continue
            x0, y0 = transform @ (c0, r1)
            x1, y1 = transform @ (c1, r0)
            geoms.append(
                box(x0, y0, x1, y1) if made % 3 else Point(*(transform @ (c + 0.5, r + 0.5)))
            )
            names.append(CLASS_NAMES[code - 1])
            made += 1
            if made >= labels_per_class:
                break
    frame = gpd.GeoDataFrame(
        {"label": names}, geometry=geoms, crs=CRS.from_user_input(crs).to_wkt()
    )
    frame = frame.to_crs(labels_crs)
    labels = folder / f"{name}_labels.gpkg"
    with atomic_path(labels) as tmp:
        frame.to_file(tmp, driver="GPKG", layer="labels")
    return SyntheticScene(raster, labels, truth)


def synthetic_classes(n_classes: int = 4) -> list:
    """The classes :func:`make_scene` uses, in code order."""
    return make_classes({i + 1: n for i, n in enumerate(CLASS_NAMES[:n_classes])})
