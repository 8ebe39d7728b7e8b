"""Quality on real data, small: NC Landsat 7, a spatially honest hold-out, a floor on ACC.

The full measurement (more epochs, random selections, the gallery) is
``bench/quality_nc.py``; this runs its loop with small settings.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import pytest

from bench.quality_nc import parser, run, spatial_split


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


@pytest.mark.slow
def test_held_out_accuracy_floor_with_small_settings(shared_data: Path, tmp_path: Path) -> None:
    args = parser().parse_args(
        ["--data", str(shared_data / "nc_landsat7"), "--work", str(tmp_path), "--epochs", "8",
         "--seeds", "0", "--draws", "0", "--no-gallery"]
    )  # fmt: skip
    results = run(args)
    main = results["splits"][0]["balanced"]
    # Full settings reach 0.87 on this split (0.60-0.87 over five splits, see
    # bench/quality_nc.py); predicting forest everywhere scores 0.50 here.
    assert main.acc >= 0.7, main
    assert main.kappa is not None and main.kappa >= 0.55
    assert main.recall["forest"] >= 0.8 and main.recall["herbaceous"] >= 0.6
    assert sum(main.support.values()) > 500
    # Polygons and points are scored separately too, and add up to the whole.
    assert sum(n for _, n in main.by_kind.values()) >= sum(main.support.values())
