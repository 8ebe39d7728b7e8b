"""The datasets catalog: ingest validates before copying, and the STAC catalog follows the files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pystac
import pytest
import rasterio
from affine import Affine
from shapely.geometry import shape

import geoportal.catalog as catalog_module
from geoportal.catalog import (
    CatalogEntry,
    add_datasets,
    add_labels,
    catalog_dir,
    list_datasets,
    update_catalog,
)
from geoportal.errors import InvalidInputError, InvalidRasterError, LabelsNotFoundError
from geoportal.labels import read_labels
from geoportal.raster import describe_scene
from geoportal.storage import Storage

EXTENSIONS = ("projection", "eo", "raster")


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def small_raster(path: Path, *, width: int = 31, height: int = 17, crs: str | None = "EPSG:32618"):
    profile = dict(
        driver="GTiff", width=width, height=height, count=2, dtype="int16", nodata=-1,
        transform=Affine(10.0, 0, 440000.0, 0, -10.0, 4170000.0),
    )  # fmt: skip
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.arange(2 * width * height, dtype="int16").reshape(2, height, width))
    return path


@pytest.fixture
def scenes(nc_scene: Path, s2_scene: Path, rgb_scene: Path) -> list[Path]:
    return [nc_scene, s2_scene, rgb_scene]


def test_the_three_scenes_are_accepted_and_catalogued(storage: Storage, scenes: list[Path]) -> None:
    calls: list[tuple[float, str]] = []
    entries = add_datasets(storage, scenes, progress=lambda f, m: calls.append((f, m)))
    assert [e.path for e in entries] == [f"datasets/{p.name}" for p in scenes]
    assert [(e.crs, e.width, e.height, e.count, e.dtype) for e in entries] == [
        ("EPSG:32119", 489, 443, 6, "float32"),
        ("EPSG:32618", 967, 973, 6, "uint16"),
        ("EPSG:32618", 791, 718, 3, "uint8"),
    ]
    assert [e.nodata for e in entries] == [-99999.0, None, 0.0]
    for scene in scenes:
        copy = storage.datasets_dir / scene.name
        assert copy.read_bytes() == scene.read_bytes()
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("validating RGB.byte.tif" in m for _, m in calls)

    # The STAC catalog: one item per scene with footprint, CRS and the extensions.
    root = pystac.Catalog.from_file(str(catalog_dir(storage) / "catalog.json"))
    items = {i.id: i for i in root.get_items(recursive=True)}
    assert set(items) == {"lsat7_2000_6band", "S2_L1C_T18SVG_20160112_20m_6band", "RGB.byte"}
    for scene in scenes:
        item = items[scene.stem]
        info = describe_scene(scene)
        assert item.bbox == pytest.approx(list(info.bounds_wgs84))
        footprint = shape(item.geometry)
        assert footprint.is_valid
        assert footprint.area == pytest.approx(shape(info.footprint).area)
        assert item.properties["proj:code"] == f"EPSG:{info.epsg}"
        assert item.properties["proj:shape"] == [info.height, info.width]
        assert item.properties["proj:transform"] == pytest.approx(list(info.transform))
        assert item.properties["proj:bbox"] == pytest.approx(list(info.bounds))
        for ext in EXTENSIONS:
            assert any(f"/{ext}/" in uri for uri in item.stac_extensions), ext
        asset = item.assets["data"]
        raw = json.loads(Path(item.get_self_href()).read_text())
        assert not os.path.isabs(raw["assets"]["data"]["href"])  # relative: the storage may move
        assert Path(asset.get_absolute_href()).resolve() == storage.datasets_dir / scene.name
        eo_bands = asset.extra_fields["eo:bands"]
        raster_bands = asset.extra_fields["raster:bands"]
        assert [b["name"] for b in eo_bands] == list(info.band_names)
        assert len(raster_bands) == info.count
        assert all(b["data_type"] == info.dtype for b in raster_bands)
        stats = raster_bands[0]["statistics"]
        assert stats["minimum"] <= stats["mean"] <= stats["maximum"]
    rgb_stats = items["RGB.byte"].assets["data"].extra_fields["raster:bands"][0]["statistics"]
    assert 60 < rgb_stats["valid_percent"] < 72  # the nodata collar is left out
    assert rgb_stats["minimum"] > 0
    nc = items["lsat7_2000_6band"].assets["data"].extra_fields["eo:bands"]
    assert [b.get("common_name") for b in nc] == ["blue", "green", "red", "nir", "swir16", "swir22"]
    s2 = items["S2_L1C_T18SVG_20160112_20m_6band"]
    assert s2.datetime is not None and s2.datetime.date().isoformat() == "2016-01-12"
    assert s2.assets["data"].extra_fields["eo:bands"][0]["center_wavelength"] == 0.705

    listed = list_datasets(storage)
    assert [e.id for e in listed] == sorted(items)
    assert {e.path: e for e in listed} == {e.path: e for e in entries}


def refusal(storage: Storage, files: list[Path]) -> str:
    with pytest.raises(InvalidRasterError) as info:
        add_datasets(storage, files)
    assert files_under(storage.datasets_dir) == []  # nothing copied, nothing catalogued
    return str(info.value)


def test_refuses_a_text_file(storage: Storage, tmp_path: Path) -> None:
    text = tmp_path / "readme.tif"
    text.write_text("this is not a raster\n")
    assert "readme.tif is not a raster" in refusal(storage, [text])


def test_refuses_a_raster_without_crs(storage: Storage, tmp_path: Path) -> None:
    plain = small_raster(tmp_path / "plain.tif", crs=None)
    message = refusal(storage, [plain])
    assert "plain.tif has no CRS" in message and "georeference" in message


def test_refuses_a_truncated_geotiff(storage: Storage, tmp_path: Path, s2_scene: Path) -> None:
    cut = tmp_path / "S2_cut.tif"
    data = s2_scene.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    message = refusal(storage, [cut])
    assert "S2_cut.tif" in message and "truncated" in message


def test_one_bad_file_refuses_the_whole_call(
    storage: Storage, tmp_path: Path, rgb_scene: Path
) -> None:
    bad = tmp_path / "nocrs.tif"
    small_raster(bad, crs=None)
    refusal(storage, [rgb_scene, bad])


def test_refuses_to_overwrite_unless_replace(storage: Storage, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = small_raster(tmp_path / "a" / "scene.tif", width=31)
    second = small_raster(tmp_path / "b" / "scene.tif", width=45)
    add_datasets(storage, [first])
    before = files_under(storage.datasets_dir)
    with pytest.raises(
        InvalidInputError, match="datasets/scene.tif exists already: pass --replace"
    ):
        add_datasets(storage, [second])
    assert files_under(storage.datasets_dir) == before
    with pytest.raises(InvalidInputError, match="also named scene.tif"):
        add_datasets(storage, [first, second], replace=True)
    (entry,) = add_datasets(storage, [second], replace=True)
    assert entry.width == 45
    # A replacement with the same size and time as the old file is described again too.
    (tmp_path / "c").mkdir()
    third = small_raster(tmp_path / "c" / "scene.tif", width=45, crs="EPSG:32617")
    os.utime(third, ns=(second.stat().st_atime_ns, second.stat().st_mtime_ns))
    assert third.stat().st_size == second.stat().st_size
    (entry,) = add_datasets(storage, [third], replace=True)
    assert entry.crs == "EPSG:32617"
    assert [e.width for e in list_datasets(storage)] == [45]
    assert not any(".tmp-" in name for name in files_under(storage.datasets_dir))


def test_link_makes_a_hard_link(storage: Storage, tmp_path: Path) -> None:
    source = small_raster(tmp_path / "linked.tif")
    (entry,) = add_datasets(storage, [source], link=True)
    target = storage.datasets_dir / "linked.tif"
    assert target.stat().st_ino == source.stat().st_ino and not target.is_symlink()
    # A hard link stays inside the storage for the resolver (a symlink would lead out).
    assert storage.resolve("alice", entry.path, must_exist=True) == target


def test_missing_files_and_empty_calls(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.tif does not exist"):
        add_datasets(storage, [tmp_path / "missing.tif"])
    with pytest.raises(InvalidInputError, match="at least one"):
        add_datasets(storage, [])
    with pytest.raises(InvalidInputError, match="hidden file names"):
        add_datasets(storage, [small_raster(tmp_path / ".hidden.tif")])
    assert files_under(storage.datasets_dir) == []


def test_update_catalog_follows_the_files(
    storage: Storage, tmp_path: Path, rgb_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_datasets(storage, [rgb_scene, small_raster(tmp_path / "small.tif")])
    # Files dropped in by hand: a raster is catalogued, junk is reported and skipped.
    shutil.copy(small_raster(tmp_path / "manual.tif"), storage.datasets_dir / "manual.tif")
    (storage.datasets_dir / "notes.txt").write_text("hello")
    (storage.datasets_dir / "small.tif").unlink()
    (storage.datasets_dir / ".hidden.tmp-123.tif").write_text("half-written")
    os.symlink(rgb_scene, storage.datasets_dir / "outside.tif")
    update = update_catalog(storage)
    assert [e.id for e in update.entries] == ["RGB.byte", "manual"]
    assert [path for path, _ in update.skipped] == ["datasets/notes.txt", "datasets/outside.tif"]
    assert "not a raster" in update.skipped[0][1]
    assert "outside the storage" in update.skipped[1][1]
    (storage.datasets_dir / "outside.tif").unlink()
    assert not (catalog_dir(storage) / "scenes" / "small").exists()  # stale item removed
    # Unchanged files reuse their items: describing them again would fail here.
    monkeypatch.setattr(catalog_module, "scene_item", lambda *a, **k: 1 / 0)
    again = update_catalog(storage)
    assert [e.id for e in again.entries] == ["RGB.byte", "manual"]
    # refresh describes every file again (and a file that fails is skipped, not fatal).
    refreshed = update_catalog(storage, refresh=True)
    assert refreshed.entries == []
    assert [path for path, _ in refreshed.skipped] == [
        "datasets/RGB.byte.tif", "datasets/manual.tif", "datasets/notes.txt",
    ]  # fmt: skip
    assert "ZeroDivisionError" in refreshed.skipped[0][1]
    # A corrupt catalog is rebuilt from the files.
    monkeypatch.undo()
    (catalog_dir(storage) / "catalog.json").write_text("{not json")
    assert [e.id for e in list_datasets(storage)] == ["RGB.byte", "manual"]
    assert [e.id for e in update_catalog(storage).entries] == ["RGB.byte", "manual"]
    assert json.loads((catalog_dir(storage) / "catalog.json").read_text())["type"] == "Catalog"


def test_list_without_a_catalog_writes_nothing(storage: Storage, tmp_path: Path) -> None:
    shutil.copy(small_raster(tmp_path / "x.tif"), storage.datasets_dir / "x.tif")
    (entry,) = list_datasets(storage)
    assert isinstance(entry, CatalogEntry) and entry.id == "x" and entry.crs == "EPSG:32618"
    assert entry.bounds == (440000.0, 4169830.0, 440310.0, 4170000.0)
    assert files_under(storage.datasets_dir) == ["x.tif"]


def test_add_labels(storage: Storage, nc_labels: Path, nc_scene: Path) -> None:
    add_datasets(storage, [nc_scene])
    entry = add_labels(storage, nc_labels / "landsat96_polygons.shp", "id")
    target = storage.datasets_dir / "labels" / "landsat96_polygons.gpkg"
    assert entry.path == "datasets/labels/landsat96_polygons.gpkg" and target.exists()
    assert entry.kind == "labels" and entry.crs == "EPSG:3358" and entry.features == 34
    assert entry.class_field == "id"
    assert [c.name for c in entry.classes][:2] == ["developed", "agriculture"]
    assert entry.counts["water"] == 7
    # The layer is named after the final file, not the temporary one it was written as.
    assert [str(name) for name, _ in pyogrio.list_layers(target)] == ["landsat96_polygons"]
    again = read_labels(target, "id")
    assert again.counts() == read_labels(nc_labels / "landsat96_polygons.shp", "id").counts()
    assert set(again.features.columns) >= {"id", "label", "geometry"}
    assert files_under(target.parent) == ["landsat96_polygons.gpkg"]
    # The STAC item: label extension with classes, linked to the scene it overlaps.
    item = pystac.Item.from_file(
        str(catalog_dir(storage) / "labels" / "landsat96_polygons" / "landsat96_polygons.json")
    )
    assert any("/label/" in uri for uri in item.stac_extensions)
    assert item.properties["label:type"] == "vector"
    assert item.properties["label:properties"] == ["id"]
    assert item.properties["label:classes"] == [{"classes": [1, 2, 3, 4, 5, 6, 7], "name": "id"}]
    sources = [link for link in item.links if link.rel == "source"]
    assert [Path(link.get_absolute_href()).stem for link in sources] == ["lsat7_2000_6band"]
    lon0, lat0, lon1, lat1 = item.bbox
    assert -78.77 < lon0 < lon1 < -78.61 and 35.68 < lat0 < lat1 < 35.81
    # Rebuilding from the files alone keeps the class field (stored in the GeoPackage).
    shutil.rmtree(catalog_dir(storage))
    labels = [e for e in update_catalog(storage).entries if e.kind == "labels"]
    assert [(e.id, e.class_field, e.features) for e in labels] == [("landsat96_polygons", "id", 34)]


def test_add_labels_by_name_points(storage: Storage, nc_labels: Path) -> None:
    entry = add_labels(storage, nc_labels / "landsat96_points.shp", "label")
    assert entry.features == 1000 and entry.class_field == "label"
    assert [c.name for c in entry.classes] == sorted(entry.counts)
    assert entry.counts["forest"] == 501
    with pytest.raises(InvalidInputError, match="exists already: pass --replace"):
        add_labels(storage, nc_labels / "landsat96_points.shp", "label")
    assert (
        add_labels(storage, nc_labels / "landsat96_points.shp", "id", replace=True).class_field
        == "id"
    )


def test_add_labels_refusals_leave_nothing(
    storage: Storage, nc_labels: Path, tmp_path: Path
) -> None:
    import geopandas as gpd

    with pytest.raises(InvalidInputError, match="its fields are: id, label, b1"):
        add_labels(storage, nc_labels / "landsat96_points.shp", "klass")
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(LabelsNotFoundError, match="no features"):
        add_labels(storage, empty, "id")
    frame = gpd.GeoDataFrame({"c": ["a"]}, geometry=[None], crs="EPSG:4326")
    frame.to_file(tmp_path / "nogeom.gpkg", layer="x")
    with pytest.raises(LabelsNotFoundError, match="no usable features"):
        add_labels(storage, tmp_path / "nogeom.gpkg", "c")
    assert files_under(storage.datasets_dir) == []
