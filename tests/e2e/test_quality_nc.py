"""Quality on real data, small: NC Landsat 7, a spatially honest hold-out, a floor on ACC.

The full measurement (more epochs, random selections, the gallery) is
``bench/quality_nc.py``; this runs its loop with small settings.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from bench.quality_nc import average_members, parser, run, spatial_split
from geoportal.classes import ClassInfo
from geoportal.inference.writer import RasterGrid, write_cog


def test_split_keeps_held_out_features_beyond_the_guard(shared_data: Path) -> None:
    labels = shared_data / "nc_landsat7" / "labels"
    polygons = gpd.read_file(labels / "landsat96_polygons.shp")
    points = gpd.read_file(labels / "landsat96_points.shp")
    guard = 3 * 28.5 * math.sqrt(2)
    split = spatial_split(polygons, points, guard_m=guard, holdout=0.3, seed=0)
    assert len(split.train) + len(split.test) == len(polygons) + len(points)
    assert 0.15 < len(split.test) / (len(polygons) + len(points)) < 0.45
    # No training feature comes within the guard of a held-out one, so no training
    # patch (radius patch_size // 2 pixels) holds a held-out pixel.
    nearest = split.test.geometry.apply(lambda g: split.train.distance(g).min())
    assert nearest.min() > guard
    # Every class with two groups or more has held-out features.
    held = set(split.test["label"])
    assert {"developed", "herbaceous", "shrubland", "forest", "water", "sediment"} <= held


def test_ensemble_takes_the_class_of_the_highest_mean_probability(tmp_path: Path) -> None:
    classes = [ClassInfo(3, "forest", "#00ff00"), ClassInfo(7, "water", "#0000ff")]
    grid = RasterGrid(2, 1, "EPSG:3358", Affine(28.5, 0, 0, 0, -28.5, 0))
    window = Window(0, 0, 2, 1)
    # Pixel 0: member a is sure of water, b leans forest -> water on average.
    # Pixel 1: nodata in the members' class rasters stays nodata.
    members = []
    for name, probs in {"a": [[10, 0], [244, 0]], "b": [[140, 0], [114, 0]]}.items():
        cls = write_cog(tmp_path / f"{name}.tif", grid, [(window, np.array([[7, 255]]))],
                        classes=classes)  # fmt: skip
        prob = write_cog(tmp_path / f"{name}_p.tif", grid, [(window, np.array(probs)[:, None])],
                         count=2)  # fmt: skip
        members.append(SimpleNamespace(classification=cls, probabilities=prob))
    out = average_members(members, tmp_path / "ensemble.tif")
    with rasterio.open(out) as ds:
        assert ds.read(1).tolist() == [[7, 255]]
        assert "forest" in ds.tags()["GEOPORTAL_CLASSES"]


@pytest.mark.slow
def test_held_out_accuracy_floor_with_small_settings(shared_data: Path, tmp_path: Path) -> None:
    args = parser().parse_args(
        ["--data", str(shared_data / "nc_landsat7"), "--work", str(tmp_path), "--epochs", "8",
         "--schedule", "onecycle", "--ensemble", "1", "--seeds", "0", "--draws", "0",
         "--no-gallery"]
    )  # fmt: skip
    results = run(args)
    main = results["splits"][0]["balanced"]
    # One model of the old settings (onecycle, 30 epochs) reaches 0.87 on this split, the
    # bench's defaults (an ensemble of 3, cosine, 50 epochs) 0.89 (0.64-0.89 over five
    # splits, see bench/quality_nc.py); predicting forest everywhere scores 0.50 here.
    assert main.acc >= 0.7, main
    assert main.kappa is not None and main.kappa >= 0.55
    assert main.recall["forest"] >= 0.8 and main.recall["herbaceous"] >= 0.6
    assert sum(main.support.values()) > 500
    # Polygons and points are scored separately too, and add up to the whole.
    assert sum(n for _, n in main.by_kind.values()) >= sum(main.support.values())
