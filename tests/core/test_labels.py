"""Labelsets: read with a class field (by code or name), reproject, rasterize onto the scene."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Point, box

from geoportal.classes import make_classes
from geoportal.errors import InvalidInputError, LabelsNotFoundError
from geoportal.labels import (
    CLASS_CODE,
    LabelSet,
    is_vector,
    rasterize_labels,
    read_labels,
    resolve_classes,
)
from geoportal.raster import open_scene
from geoportal.synthetic import make_scene, synthetic_classes

NC_NAMES = {
    1: "developed", 2: "agriculture", 3: "herbaceous", 4: "shrubland", 5: "forest", 6: "water",
    7: "sediment",
}  # fmt: skip
# Labelled pixels per class in landsat96_labelled_pixels.tif (README of ../shared/data).
NC_PIXELS = {1: 427, 2: 65, 3: 609, 4: 290, 5: 939, 6: 433, 7: 109}


@pytest.fixture(scope="module")
def nc_grid(nc_scene: Path):
    with open_scene(nc_scene) as ds:
        return ds.transform, (ds.height, ds.width), ds.crs


# Opening a Shapefile costs GDAL ~0.5 s here (it matches the .prj against the EPSG
# database), so each labelset is read once per module.
@pytest.fixture(scope="module")
def nc_polygons(nc_labels: Path) -> LabelSet:
    return read_labels(nc_labels / "landsat96_polygons.shp", "id")


@pytest.fixture(scope="module")
def nc_points(nc_labels: Path) -> LabelSet:
    return read_labels(nc_labels / "landsat96_points.shp", "id")


def test_polygons_by_code_with_names_from_companion_field(nc_polygons: LabelSet, nc_grid) -> None:
    labels = nc_polygons
    assert labels.crs.to_epsg() == 3358
    assert {c.code: c.name for c in labels.classes} == NC_NAMES
    assert labels.counts() == {
        "developed": 3, "agriculture": 1, "herbaceous": 4, "shrubland": 7, "forest": 7,
        "water": 7, "sediment": 5,
    }  # fmt: skip
    transform, shape, crs = nc_grid
    moved = labels.to_crs(crs)
    assert moved.crs.to_epsg() == 32119
    # NAD83(HARN) vs NAD83 differ by well under a metre: coordinates barely move.
    before = labels.features.geometry.centroid
    after = moved.features.geometry.centroid
    shift = np.hypot(before.x - after.x, before.y - after.y)
    # The datums differ by under a metre (PROJ picks a ballpark transformation for the
    # WKT form, a 0.8 m Helmert shift for the EPSG codes): positions barely move.
    assert shift.max() < 1.0


def test_polygons_rasterize_onto_the_label_raster(
    nc_polygons: LabelSet, nc_labels: Path, nc_grid
) -> None:
    transform, shape, crs = nc_grid
    labels = nc_polygons.to_crs(crs)
    assert labels.crs.to_epsg() == 32119
    with rasterio.open(nc_labels / "landsat96_labelled_pixels.tif") as src:
        reference = src.read(1)
        reference = np.where(reference == src.nodata, 0, reference).astype(np.uint8)
    touched = rasterize_labels(labels, transform, shape, crs, all_touched=True)
    assert touched.dtype == np.uint8 and touched.shape == shape
    # The GRASS label raster is exactly the polygons burnt with every touched pixel.
    assert {c: int((touched == c).sum()) for c in NC_PIXELS} == NC_PIXELS
    assert np.array_equal(touched, reference)
    centres = rasterize_labels(labels, transform, shape, crs)
    inside = centres > 0
    assert 0.7 * reference.astype(bool).sum() < inside.sum() < reference.astype(bool).sum()
    assert (centres[inside] == reference[inside]).all()


def test_class_field_by_name(nc_polygons: LabelSet, nc_labels: Path, nc_grid) -> None:
    transform, shape, crs = nc_grid
    by_code = nc_polygons
    by_name = read_labels(nc_labels / "landsat96_polygons.shp", "label")
    # Without a class list, names get codes 1..N in sorted order.
    assert [c.name for c in by_name.classes] == sorted(NC_NAMES.values())
    assert by_name.counts() == by_code.counts()
    # With the class list, names map onto its codes and the rasters agree (the same
    # mapping read_labels applies, here without opening the Shapefile again).
    classes = make_classes(NC_NAMES)
    codes, class_list = resolve_classes(
        by_name.features["label"], by_name.features, "label", classes
    )
    named = LabelSet(by_name.features.assign(**{CLASS_CODE: codes}), class_list, "label", "")
    a = rasterize_labels(named, transform, shape, crs)
    b = rasterize_labels(by_code, transform, shape, crs)
    assert np.array_equal(a, b) and a.any()


def test_points_sample_the_right_pixels(nc_points: LabelSet, nc_scene: Path, nc_grid) -> None:
    transform, shape, crs = nc_grid
    points = nc_points.to_crs(crs)
    assert len(points.features) == 1000
    assert points.counts()["forest"] == 501 and points.counts()["sediment"] == 3
    burnt = rasterize_labels(points, transform, shape, crs)
    labelled = int((burnt > 0).sum())
    assert 800 < labelled <= 1000  # several points share a pixel
    # The points carry band-1 values sampled from the imagery: after reprojection
    # every one of them falls on a pixel with exactly that value.
    feats = points.features[points.features["b1"].notna()]
    assert len(feats) > 500
    with rasterio.open(nc_scene) as ds:
        values = np.array([v[0] for v in ds.sample([(g.x, g.y) for g in feats.geometry])])
    assert (values == feats["b1"].to_numpy()).all()
    rows, cols = rasterio.transform.rowcol(transform, feats.geometry.x, feats.geometry.y)
    assert (burnt[rows, cols] > 0).all()


def test_synthetic_labels_in_wgs84_onto_a_utm_scene(tmp_path: Path) -> None:
    scene = make_scene(tmp_path, width=173, height=131, seed=5, labels_crs="EPSG:4326")
    labels = read_labels(scene.labels, "label", classes=synthetic_classes(4))
    assert labels.crs.to_epsg() == 4326
    with open_scene(scene.raster) as ds:
        assert ds.crs.to_epsg() == 32618
        burnt = rasterize_labels(labels, ds.transform, (ds.height, ds.width), ds.crs)
    labelled = burnt > 0
    assert labelled.sum() > 50
    assert set(np.unique(burnt[labelled])) <= {1, 2, 3, 4}
    assert (burnt[labelled] == scene.truth[labelled]).mean() > 0.98
    # Points and polygons are both present and both burnt.
    types = set(labels.features.geom_type)
    assert {"Point", "Polygon"} <= types


def test_geojson_and_mixed_geometries(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"cls": ["water", "forest", "water"], "note": ["a", "b", "c"]},
        geometry=[box(500000, 4099900, 500050, 4099950), Point(500075, 4099975), None],
        crs="EPSG:32618",
    )
    path = tmp_path / "labels.geojson"
    frame.to_file(path, driver="GeoJSON")
    labels = read_labels(path, "cls")
    assert len(labels.features) == 2  # the feature without geometry is dropped
    assert labels.features[CLASS_CODE].tolist() == [2, 1]
    transform = rasterio.transform.from_origin(500000, 4100000, 10, 10)
    burnt = rasterize_labels(labels, transform, (10, 10), "EPSG:32618")
    assert (burnt == 2).sum() == 25 and (burnt == 1).sum() == 1
    assert is_vector(path) and is_vector("x.GPKG") and not is_vector("x.tif")


def test_missing_field_lists_the_fields(nc_labels: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        read_labels(nc_labels / "landsat96_points.shp", "class")
    assert info.value.field == "class_field"
    assert "'class' is not in landsat96_points.shp" in str(info.value)
    assert "id, label, b1" in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"id": []}, geometry=[], crs="EPSG:4326").to_file(empty, layer="empty")
    with pytest.raises(LabelsNotFoundError, match="empty.gpkg hold no features"):
        read_labels(empty, "id")
    (tmp_path / "fc.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(LabelsNotFoundError, match="no features"):
        read_labels(tmp_path / "fc.geojson", "id")
    with pytest.raises(LabelsNotFoundError, match="do not exist"):
        read_labels(tmp_path / "missing.gpkg", "id")
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.gpkg", "id")
    (tmp_path / "junk.gpkg").write_text("not a geopackage")
    with pytest.raises(InvalidInputError, match="cannot be read as vector data"):
        read_labels(tmp_path / "junk.gpkg", "id")


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_unusable_class_values(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"v": [1.5, 2.0], "name": ["a", "b"]},
        geometry=[Point(0, 0), Point(1, 1)],
        crs="EPSG:4326",
    )
    frame.to_file(tmp_path / "f.gpkg", layer="f")
    with pytest.raises(InvalidInputError, match="non-integer"):
        read_labels(tmp_path / "f.gpkg", "v")
    with pytest.raises(InvalidInputError, match=r"class names \['b'\]"):
        read_labels(tmp_path / "f.gpkg", "name", classes=make_classes({1: "a"}))
    nocrs = gpd.GeoDataFrame({"v": [1]}, geometry=[Point(0, 0)])
    nocrs.to_file(tmp_path / "nocrs.geojson", driver="GeoJSON")
    # GeoJSON implies WGS84, so use a Shapefile without .prj for "no CRS".
    nocrs.to_file(tmp_path / "nocrs.shp")
    (tmp_path / "nocrs.prj").unlink(missing_ok=True)
    with pytest.raises(InvalidInputError, match="no CRS"):
        read_labels(tmp_path / "nocrs.shp", "v")
