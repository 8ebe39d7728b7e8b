"""Labelsets in the storage: save, load, versions, CRS round trip, class statistics."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import Point, box

from geoportal.classes import make_classes
from geoportal.errors import AccessDeniedError, InvalidInputError, LabelsNotFoundError
from geoportal.labelstore import LabelStore, class_statistics

CLASSES = make_classes({1: "forest", 2: "water", 3: "urban"})


def _frame(crs: str = "EPSG:32119") -> gpd.GeoDataFrame:
    # Two 100 m x 100 m squares of forest, one 50 x 20 m water, one urban point.
    return gpd.GeoDataFrame(
        {"class": [1, 1, 2, 3]},
        geometry=[
            box(635000, 220000, 635100, 220100),
            box(636000, 220000, 636100, 220100),
            box(637000, 221000, 637050, 221020),
            Point(638000, 222000),
        ],
        crs=crs,
    )


def test_save_load_keeps_crs_fields_and_classes(storage) -> None:
    store = LabelStore(storage, "alice")
    path = store.save("fields", _frame(), CLASSES)
    assert path == storage.root / "users/alice/labels/fields.gpkg"
    loaded = store.load("fields")
    assert loaded.crs.to_epsg() == 32119
    assert sorted(loaded.features["class"]) == [1, 1, 2, 3]
    assert list(loaded.features["label"]) == ["forest", "forest", "water", "urban"]
    assert set(loaded.features["author"]) == {"alice"}
    assert loaded.features["timestamp"].str.endswith("Z").all()
    assert loaded.features["label_id"].is_unique
    assert [(c.code, c.name, c.color) for c in loaded.classes] == [
        (c.code, c.name, c.color) for c in CLASSES
    ]
    assert sorted(loaded.features.geom_type) == ["Point", "Polygon", "Polygon", "Polygon"]
    # No temporary leftovers beside the final file.
    assert [p.name for p in (storage.root / "users/alice/labels").iterdir()] == ["fields.gpkg"]


def test_read_labels_understands_a_saved_labelset(storage) -> None:
    from geoportal.labels import read_labels

    store = LabelStore(storage, "alice")
    path = store.save("fields", _frame(), CLASSES)
    labels = read_labels(path, "class", layer="fields")
    assert labels.counts() == {"forest": 2, "water": 1, "urban": 1}


def test_geographic_crs_round_trip(storage) -> None:
    store = LabelStore(storage, "alice")
    frame = _frame().to_crs("EPSG:4326")
    store.save("wgs", frame, CLASSES)
    loaded = store.load("wgs")
    assert loaded.crs.to_epsg() == 4326
    back = loaded.features.to_crs("EPSG:32119")
    assert back.geometry.iloc[0].area == pytest.approx(10_000, rel=1e-3)


def test_versions_keep_every_earlier_save_and_restore(storage) -> None:
    store = LabelStore(storage, "alice")
    store.save("fields", _frame(), CLASSES)
    store.save("fields", _frame().iloc[:1], CLASSES)  # a mistaken save: three features lost
    assert len(store.load("fields").features) == 1
    versions = store.versions("fields")
    assert len(versions) == 1
    assert len(gpd.read_file(versions[0].path, layer="fields")) == 4
    store.restore_version("fields", versions[0].timestamp)
    assert len(store.load("fields").features) == 4
    # The state before the restore is a version too: nothing is lost either way.
    assert [len(gpd.read_file(v.path, layer="fields")) for v in store.versions("fields")] == [4, 1]
    entries = store.labelsets()
    assert [(e.name, e.features, e.versions) for e in entries] == [("fields", 4, 2)]
    with pytest.raises(LabelsNotFoundError, match="no version"):
        store.restore_version("fields", "19990101T000000_000000Z")


def test_empty_save_is_a_labelset_without_features(storage) -> None:
    store = LabelStore(storage, "alice")
    store.save("fields", _frame(), CLASSES)
    store.save("fields", _frame().iloc[:0], CLASSES)
    loaded = store.load("fields")
    assert len(loaded.features) == 0
    assert [c.name for c in loaded.classes] == ["forest", "water", "urban"]


def test_bad_input_leaves_nothing(storage) -> None:
    store = LabelStore(storage, "alice")
    bad = _frame()
    bad.loc[0, "class"] = 9
    with pytest.raises(InvalidInputError, match=r"class codes \['9'\]"):
        store.save("fields", bad, CLASSES)
    with pytest.raises(InvalidInputError, match="no CRS"):
        store.save("fields", _frame().set_crs(None, allow_override=True), CLASSES)
    with pytest.raises(InvalidInputError, match="labelset name"):
        store.save("../bob/x", _frame(), CLASSES)
    assert list((storage.root / "users/alice/labels").iterdir()) == []
    with pytest.raises(LabelsNotFoundError, match="does not exist"):
        store.load("fields")
    with pytest.raises(AccessDeniedError):
        LabelStore(storage, "alice").storage.resolve("alice", "users/bob/labels/x.gpkg")


def test_class_statistics_count_and_area(storage) -> None:
    stats = {s.name: s for s in class_statistics(_frame(), CLASSES)}
    assert stats["forest"].count == 2 and stats["forest"].area_m2 == pytest.approx(20_000)
    assert stats["water"].count == 1 and stats["water"].area_m2 == pytest.approx(1_000)
    assert stats["urban"].count == 1 and stats["urban"].area_m2 == 0
    # Geographic labels are measured in the scene's projected CRS, not in degrees.
    geo = class_statistics(_frame().to_crs("EPSG:4326"), CLASSES, scene_crs="EPSG:32119")
    assert {s.name: round(s.area_m2) for s in geo}["forest"] == pytest.approx(20_000, rel=1e-3)
    # Without a projected CRS an equal-area CRS is used (within 1 % here).
    ea = class_statistics(_frame().to_crs("EPSG:4326"), CLASSES)
    assert {s.name: s.area_m2 for s in ea}["forest"] == pytest.approx(20_000, rel=0.01)
    # A class without features is listed with zeros.
    extra = make_classes({1: "forest", 2: "water", 3: "urban", 4: "snow"})
    assert [s.count for s in class_statistics(_frame(), extra)] == [2, 1, 1, 0]
