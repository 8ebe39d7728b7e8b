"""The label check: features whose pixels the other labels call another class."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Point, box

from geoportal.errors import InvalidInputError
from geoportal.labelcheck import LabelCheckConfig, check_labels, checks_table, drop_suspects


def test_nc_flags_the_water_polygon_with_forest_pixels(nc_scene, nc_labels):
    """Of the 34 NC polygons only the 1996 'water' polygon that reads as forest is suspect."""
    polygons = nc_labels / "landsat96_polygons.shp"
    checks = check_labels(nc_scene, polygons, "label")
    assert len(checks) == 34
    suspects = [c for c in checks if c.suspect]
    assert [(c.index, c.label, c.other_class) for c in suspects] == [(23, "water", "forest")]
    assert suspects[0].own_share == 0.0 and suspects[0].other_share > 0.9
    # The clear lake (the largest water polygon) is not suspect; neither is any forest stand.
    water = [c for c in checks if c.label == "water" and c.pixels]
    assert max(water, key=lambda c: c.pixels).suspect is False
    assert all(not c.suspect for c in checks if c.label == "forest")
    # Polygons under band 7's nodata have no valid pixel and are never judged.
    assert all(c.own_share is None and not c.suspect for c in checks if c.pixels == 0)


@pytest.fixture
def two_class_scene(tmp_path: Path) -> Path:
    """Left half bright in band 1, right half bright in band 2 (with noise)."""
    rng = np.random.default_rng(0)
    data = rng.normal(100, 3, (2, 60, 80))
    data[0, :, :40] += 60
    data[1, :, 40:] += 60
    path = tmp_path / "scene.tif"
    profile = {
        "driver": "GTiff", "width": 80, "height": 60, "count": 2, "dtype": "float32",
        "crs": "EPSG:32618", "transform": Affine(10, 0, 500_000, 0, -10, 4_000_600),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype("float32"))
    return path


def _labels(path: Path, rows: list[tuple[str, object]]) -> Path:
    frame = gpd.GeoDataFrame(
        {"label": [r[0] for r in rows]}, geometry=[r[1] for r in rows], crs="EPSG:32618"
    )
    frame.to_file(path, driver="GPKG")
    return path


def _px(col: float, row: float) -> tuple[float, float]:
    return 500_000 + 10 * col, 4_000_600 - 10 * row


def test_a_large_mislabelled_polygon_cannot_vouch_for_itself(two_class_scene, tmp_path):
    """Its own pixels are excluded from the vote, however many there are."""
    rows = [
        ("left", box(*_px(2, 20), *_px(12, 10))),
        ("left", box(*_px(20, 50), *_px(30, 40))),
        ("right", box(*_px(50, 20), *_px(60, 10))),
        ("right", box(*_px(65, 50), *_px(75, 40))),
        ("left", box(*_px(45, 40), *_px(75, 25))),  # 450 px of "right" pixels called left
        ("right", Point(*_px(5.5, 55.5))),  # a point on the left half called right
        ("left", Point(*_px(8.5, 30.5))),  # a correct point
    ]
    labels = _labels(tmp_path / "labels.gpkg", rows)
    checks = check_labels(two_class_scene, labels, "label")
    assert [c.suspect for c in checks] == [False, False, False, False, True, True, False]
    assert checks[4].other_class == "right" and checks[4].pixels == 200  # max_pixels
    assert checks[5].kind == "point" and checks[5].pixels == 1
    assert checks_table(checks)[4]["suspect"] is True

    kept = drop_suspects(labels, checks, tmp_path / "kept.gpkg", kinds=("polygon",))
    frame = gpd.read_file(kept)
    assert len(frame) == 6 and "Point" in set(frame.geom_type)  # the suspect point stays
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept.gpkg", "labels.gpkg", "scene.tif",
    ]  # fmt: skip
    everything = gpd.read_file(drop_suspects(labels, checks, tmp_path / "all.gpkg"))
    assert len(everything) == 5


def test_bad_thresholds_name_the_field():
    with pytest.raises(InvalidInputError) as err:
        LabelCheckConfig(max_own_share=0.7, min_other_share=0.6)
    assert err.value.field == "max_own_share"
    with pytest.raises(InvalidInputError):
        LabelCheckConfig(k=0)


def test_cli_check_labels(nc_scene, nc_labels, tmp_path, settings):  # noqa: ARG001
    """`geoportal samples check-labels` names the suspect, writes verdicts and cleaned labels."""
    from typer.testing import CliRunner

    from geoportal.cli import app

    polygons = nc_labels / "landsat96_polygons.shp"
    args = ["samples", "check-labels", str(nc_scene), str(polygons), "--class-field", "label"]
    out = [
        "--csv", str(tmp_path / "verdicts.csv"), "--drop", str(tmp_path / "clean.gpkg"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, [*args, *out])
    assert result.exit_code == 0, result.output
    assert "1 suspect of 29 features with valid pixels (34 in all)" in result.output
    assert "feature 23 (polygon, 71 px): labelled water" in result.output
    assert len((tmp_path / "verdicts.csv").read_text().splitlines()) == 35
    assert len(gpd.read_file(tmp_path / "clean.gpkg")) == 33

    bad = CliRunner().invoke(app, [*args[:-1], "nope"])
    assert bad.exit_code == 2 and "class_field" in bad.output


def test_a_feature_outside_the_scene_is_not_judged(two_class_scene, tmp_path):
    rows = [
        ("left", box(*_px(2, 20), *_px(12, 10))),
        ("right", box(*_px(50, 20), *_px(60, 10))),
        ("left", Point(*_px(500, 500))),  # far outside the scene
    ]
    checks = check_labels(two_class_scene, _labels(tmp_path / "l.gpkg", rows), "label")
    assert (checks[2].pixels, checks[2].own_share, checks[2].suspect) == (0, None, False)
