"""Classification rasters as Cloud-Optimised GeoTIFFs, written block by block.

The class raster is one uint8 band holding class *codes*, nodata 255, with a
colour table, the class list as JSON in the ``GEOPORTAL_CLASSES`` tag, the band
description and GDAL category names (in the ``.aux.xml`` sidecar, the only place
a GeoTIFF keeps them). Optional companions: a probability raster (one uint8
band per class, value = round(p × 254), nodata 255) or a confidence raster (the
winning probability, same scale).

Pixels arrive as windows (from per-block part files), so memory stays bounded
by one block. They go into a plain tiled GeoTIFF first and are then copied by
GDAL's COG driver, which adds the overviews and the COG layout (the driver
cannot be written window by window). Everything happens under temporary names
and is renamed at the end (:mod:`geoportal.atomic`), so a crash or a bad input
leaves nothing under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from geoportal.atomic import atomic_path, atomic_write_text, temporary_sibling
from geoportal.classes import CLASS_NODATA, ClassInfo, classes_to_json

PROB_SCALE = 254
"""Probabilities are stored as round(p × 254); 255 is nodata."""

CLASSES_TAG = "GEOPORTAL_CLASSES"


@dataclass(frozen=True)
class RasterGrid:
    """Where the output lies: the input scene's grid and CRS."""

    width: int
    height: int
    crs: str
    transform: Affine


def _cog_options(count: int) -> dict[str, str]:
    return {
        "COMPRESS": "DEFLATE",
        "LEVEL": "6",
        "BLOCKSIZE": "512",
        "OVERVIEWS": "AUTO",
        "OVERVIEW_RESAMPLING": "NEAREST" if count == 1 else "AVERAGE",
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
    }


def write_cog(
    final: str | os.PathLike[str],
    grid: RasterGrid,
    windows: Iterable[tuple[Window, np.ndarray]],
    *,
    count: int = 1,
    nodata: int = CLASS_NODATA,
    classes: Sequence[ClassInfo] | None = None,
    descriptions: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a uint8 COG from ``(window, array)`` pairs that cover the grid.

    Args:
        final: the output path (``.tif``); written atomically.
        grid: size, CRS and transform of the output.
        windows: pieces of the raster; arrays are (H, W) or (count, H, W) uint8.
        count: bands of the output.
        nodata: the nodata value (255 for class rasters; never a class code).
        classes: for class rasters: the colour table, class tag and category names.
        descriptions: band descriptions.
        tags: extra dataset tags.

    Returns:
        The final path.
    """
    final = Path(final)
    with atomic_path(final) as tmp:
        plain = temporary_sibling(final.with_name(final.stem + "-plain.tif"))
        try:
            profile = {
                "driver": "GTiff",
                "width": grid.width,
                "height": grid.height,
                "count": count,
                "dtype": "uint8",
                "crs": grid.crs,
                "transform": grid.transform,
                "nodata": nodata,
                "tiled": True,
                "blockxsize": 512,
                "blockysize": 512,
                "compress": "NONE",
                "BIGTIFF": "IF_SAFER",
            }
            with rasterio.open(plain, "w", **profile) as dst:
                for window, array in windows:
                    data = array if array.ndim == 3 else array[None]
                    dst.write(data.astype(np.uint8, copy=False), window=window)
                all_tags = dict(tags or {})
                if classes:
                    all_tags[CLASSES_TAG] = json.dumps(classes_to_json(classes))
                    colormap = {i: (0, 0, 0, 0) for i in range(256)}
                    for c in classes:
                        colormap[c.code] = (*c.rgb, 255)
                    dst.write_colormap(1, colormap)
                if all_tags:
                    dst.update_tags(**all_tags)
                for i, text in enumerate(descriptions or [], start=1):
                    dst.set_band_description(i, text)
            rasterio.shutil.copy(plain, tmp, driver="COG", **_cog_options(count))
        finally:
            plain.unlink(missing_ok=True)
    if classes:
        write_category_names(final, classes)
    return final


def write_category_names(raster: str | os.PathLike[str], classes: Sequence[ClassInfo]) -> Path:
    """Write GDAL category names (index = class code) into ``<raster>.aux.xml``.

    GeoTIFF has no field for category names; GDAL reads them from this PAM
    sidecar, so QGIS and ``gdalinfo`` show class names next to the colours.
    """
    names = [""] * (max(c.code for c in classes) + 1)
    for c in classes:
        names[c.code] = c.name
    items = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    xml = (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>{items}</CategoryNames>\n"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )
    return atomic_write_text(Path(f"{os.fspath(raster)}.aux.xml"), xml)
