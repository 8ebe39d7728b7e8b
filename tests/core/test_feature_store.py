"""The labeling map's feature store: edits and deletions tracked by id, undo.

ipyleaflet's DrawControl loses edited shapes (ipyleaflet #849, #445); the map
keeps its own store and applies the control's events by ``label_id``. These
tests feed it the events the control sends, and also drive a real
``LabelingMap`` through its DrawControl's message handler.
"""

from __future__ import annotations

import copy

import pytest

from geoportal.classes import make_classes
from geoportal.errors import InvalidInputError
from geoportal.mapping.store import FeatureStore

CLASSES = make_classes({1: "forest", 2: "water"})


def _poly(x: float, y: float, d: float = 0.01) -> dict:
    ring = [[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]
    return {"type": "Feature", "properties": {"style": {"color": "#000"}},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}  # fmt: skip


def test_events_are_applied_by_id_and_undone() -> None:
    store = FeatureStore(CLASSES, author="alice")
    changes: list[str] = []
    store.on_change(changes.append)
    a = store.apply_event("created", _poly(-78.7, 35.7), active_class=1)
    b = store.apply_event("created", _poly(-78.6, 35.7), active_class=2)
    assert [f["properties"]["label"] for f in store.features()] == ["forest", "water"]
    # What the control sends back after an edit: the shape with our id and a new geometry.
    edited = store.to_geojson()[0]
    edited["geometry"]["coordinates"][0][2] = [-78.0, 36.0]
    assert store.apply_event("edited", edited, active_class=2) == a
    assert store.get(a)["geometry"]["coordinates"][0][2] == [-78.0, 36.0]
    assert store.get(a)["properties"]["class"] == 1  # an edit keeps the class
    # A shape without an id (the control's own copy) is not silently taken for another one.
    assert store.apply_event("edited", _poly(0, 0), active_class=1) is None
    assert store.apply_event("deleted", store.to_geojson()[1], active_class=1) == b
    assert len(store) == 1 and b not in store
    assert changes == ["created", "created", "edited", "deleted"]
    assert store.undo() == "deleted" and b in store
    assert store.undo() == "edited"
    assert store.get(a)["geometry"]["coordinates"][0][2] != [-78.0, 36.0]
    assert store.undo() == "created" and b not in store
    assert store.undo() == "created" and len(store) == 0
    assert store.undo() is None


def test_styles_follow_classes_and_bad_classes_fail() -> None:
    store = FeatureStore(CLASSES, author="alice")
    store.add(_poly(0, 0)["geometry"], 2)
    style = store.to_geojson()[0]["properties"]["style"]
    assert style["color"] == CLASSES[1].color
    with pytest.raises(InvalidInputError, match="not in the legend"):
        store.add(_poly(0, 0)["geometry"], 5)
    frame = store.to_frame()
    assert frame.crs.to_epsg() == 4326 and list(frame["label"]) == ["water"]


def test_labeling_map_tracks_edits_and_saves(storage, nc_scene, monkeypatch) -> None:
    import shutil

    import geopandas as gpd

    from geoportal.mapping import LabelingMap

    shutil.copy(nc_scene, storage.root / "datasets/nc.tif")
    lmap = LabelingMap(
        "datasets/nc.tif", {1: "forest", 2: "water"}, labelset="t", user="alice",
        storage=storage, tile_url="http://127.0.0.1:9", basemap=False, autosave_seconds=0,
    )  # fmt: skip
    assert "scene=datasets/nc.tif" in lmap.scene_layer.url and "bands=3,2,1" in lmap.scene_layer.url
    lmap.set_style(bands=(4, 3, 2), stretch=(1, 99))
    assert "bands=4,3,2&stretch=1,99" in lmap.scene_layer.url

    def send(event: str, geo_json: dict) -> None:
        lmap.draw._handle_leaflet_event(
            None, {"event": f"draw:{event}", "geo_json": geo_json}, None
        )

    send("created", _poly(-78.70, 35.74))
    lmap.active_class = 2
    send("created", _poly(-78.68, 35.74))
    send("created", {"type": "Feature", "properties": {},
                     "geometry": {"type": "Point", "coordinates": [-78.66, 35.75]}})  # fmt: skip
    # The control now holds the two polygons with their ids (points are drawn apart).
    shapes = copy.deepcopy(lmap.draw.data)
    assert len(shapes) == 2 and all(s["properties"]["label_id"] for s in shapes)
    assert len(lmap.points_layer.data["features"]) == 1
    shapes[0]["geometry"]["coordinates"][0][1] = [-78.60, 35.74]
    send("edited", shapes[0])
    send("deleted", shapes[1])
    assert lmap.statistics()[0].area_m2 > 0
    path = lmap.save()
    saved = gpd.read_file(path, layer="t")
    assert sorted(zip(saved["label"], saved.geom_type, strict=True)) == [
        ("forest", "Polygon"), ("water", "Point"),
    ]  # fmt: skip
    assert saved.crs.to_epsg() == 32119
    lmap.undo()  # brings the deleted polygon back
    assert len(lmap.store) == 3
    again = LabelingMap(
        "datasets/nc.tif", labelset="t", user="alice", storage=storage,
        tile_url="http://127.0.0.1:9", basemap=False, autosave_seconds=0,
    )  # fmt: skip
    assert [c.name for c in again.classes] == ["forest", "water"]
    assert len(again.store) == 2 and len(again.draw.data) == 1
