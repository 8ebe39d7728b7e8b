"""The map's own record of the drawn features, independent of any widget.

ipyleaflet's ``DrawControl`` keeps shapes in the browser and tells the kernel
about changes by events; its ``data`` list loses track of edited shapes
(ipyleaflet #849, #445), so it cannot be the truth. :class:`FeatureStore` is:
every feature gets a ``label_id`` property when it is created, the map pushes
the store back into the control (so the browser's layers carry the id), and
edit and delete events are applied by that id. Every change is undoable.

Geometries are GeoJSON in WGS84 (what Leaflet speaks); the labelset on disk
keeps whatever CRS it was saved in (see :mod:`geoportal.labelstore`).
"""

from __future__ import annotations

import copy
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from geoportal.classes import ClassInfo, by_code
from geoportal.errors import InvalidInputError
from geoportal.labelstore import (
    AUTHOR_FIELD,
    CLASS_FIELD,
    ID_FIELD,
    NAME_FIELD,
    TIME_FIELD,
    now_iso,
)

Feature = dict[str, Any]
_KEPT = (ID_FIELD, CLASS_FIELD, NAME_FIELD, AUTHOR_FIELD, TIME_FIELD)
MAX_UNDO = 200


def class_style(info: ClassInfo, geometry_type: str) -> dict[str, Any]:
    """The Leaflet path style of a feature of class ``info``."""
    style: dict[str, Any] = {"color": info.color, "fillColor": info.color, "weight": 2}
    style["fillOpacity"] = 0.9 if geometry_type == "Point" else 0.35
    return style


class FeatureStore:
    """Features keyed by ``label_id``, with undo and change listeners.

    Args:
        classes: the class legend; features may only use these codes.
        author: recorded on each feature when it is created or changed.
    """

    def __init__(self, classes: Sequence[ClassInfo], author: str) -> None:
        if not classes:
            raise InvalidInputError("give at least one class (code, name, colour)", field="classes")
        self.classes = list(classes)
        self.author = author
        self._features: OrderedDict[str, Feature] = OrderedDict()
        self._history: list[tuple[str, OrderedDict[str, Feature]]] = []
        self._listeners: list[Callable[[str], None]] = []

    # -- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._features

    def __iter__(self) -> Iterator[Feature]:
        return iter(self.features())

    def features(self) -> list[Feature]:
        """Copies of the features, in creation order."""
        return [copy.deepcopy(f) for f in self._features.values()]

    def get(self, label_id: str) -> Feature:
        return copy.deepcopy(self._features[label_id])

    def counts(self) -> dict[str, int]:
        names = {c.code: c.name for c in self.classes}
        out = {c.name: 0 for c in self.classes}
        for f in self._features.values():
            out[names[f["properties"][CLASS_FIELD]]] += 1
        return out

    def to_geojson(self) -> list[Feature]:
        """Features for the draw control: properties with a ``style`` per class."""
        known = by_code(self.classes)
        out = []
        for f in self._features.values():
            g = copy.deepcopy(f)
            g["properties"]["style"] = class_style(
                known[g["properties"][CLASS_FIELD]], g["geometry"]["type"]
            )
            out.append(g)
        return out

    def to_frame(self) -> Any:
        """The features as a GeoDataFrame in EPSG:4326 (columns as in a labelset)."""
        from geoportal.labelstore import features_from_geojson

        return features_from_geojson(self.features(), crs="EPSG:4326")

    # -- listeners and history ----------------------------------------------------------------

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(action)`` after every change (``created``, ``edited``, …)."""
        self._listeners.append(callback)

    def _changed(self, action: str) -> None:
        for callback in list(self._listeners):
            callback(action)

    def _checkpoint(self, action: str) -> None:
        self._history.append((action, copy.deepcopy(self._features)))
        del self._history[:-MAX_UNDO]

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> str | None:
        """Take back the last change; returns its action name, or None if nothing to undo."""
        if not self._history:
            return None
        action, previous = self._history.pop()
        self._features = previous
        self._changed("undo")
        return action

    # -- changes --------------------------------------------------------------------------------

    def _check_code(self, code: int) -> int:
        if int(code) not in by_code(self.classes):
            raise InvalidInputError(
                f"class {code} is not in the legend {[c.code for c in self.classes]}",
                field="class",
            )
        return int(code)

    def add(self, geometry: dict[str, Any], code: int, *, label_id: str | None = None) -> str:
        """Add a shape of class ``code``; returns its new ``label_id``."""
        code = self._check_code(code)
        if not isinstance(geometry, dict) or "type" not in geometry:
            raise InvalidInputError("geometry must be a GeoJSON geometry", field="geometry")
        self._checkpoint("created")
        label_id = label_id or uuid.uuid4().hex
        self._features[label_id] = {
            "type": "Feature",
            "geometry": copy.deepcopy(geometry),
            "properties": {
                ID_FIELD: label_id,
                CLASS_FIELD: code,
                NAME_FIELD: by_code(self.classes)[code].name,
                AUTHOR_FIELD: self.author,
                TIME_FIELD: now_iso(),
            },
        }
        self._changed("created")
        return label_id

    def update_geometry(self, label_id: str, geometry: dict[str, Any]) -> bool:
        """Replace the geometry of ``label_id``; False if there is no such feature."""
        if label_id not in self._features:
            return False
        if self._features[label_id]["geometry"] == geometry:
            return True
        self._checkpoint("edited")
        feature = self._features[label_id]
        feature["geometry"] = copy.deepcopy(geometry)
        feature["properties"][AUTHOR_FIELD] = self.author
        feature["properties"][TIME_FIELD] = now_iso()
        self._changed("edited")
        return True

    def set_class(self, label_id: str, code: int) -> bool:
        """Move ``label_id`` to class ``code``."""
        code = self._check_code(code)
        if label_id not in self._features:
            return False
        self._checkpoint("reclassified")
        props = self._features[label_id]["properties"]
        props.update(
            {CLASS_FIELD: code, NAME_FIELD: by_code(self.classes)[code].name,
             AUTHOR_FIELD: self.author, TIME_FIELD: now_iso()}
        )  # fmt: skip
        self._changed("reclassified")
        return True

    def remove(self, label_id: str) -> bool:
        """Delete ``label_id``; False if there is no such feature."""
        if label_id not in self._features:
            return False
        self._checkpoint("deleted")
        del self._features[label_id]
        self._changed("deleted")
        return True

    def clear(self) -> None:
        if self._features:
            self._checkpoint("cleared")
            self._features.clear()
            self._changed("cleared")

    def replace_all(self, features: Sequence[Feature], *, undoable: bool = False) -> None:
        """Load features (a saved labelset, GeoJSON in WGS84) in place of the current ones."""
        loaded: OrderedDict[str, Feature] = OrderedDict()
        names = by_code(self.classes)
        for f in features:
            props = {k: v for k, v in (f.get("properties") or {}).items() if k in _KEPT}
            code = self._check_code(int(props[CLASS_FIELD]))
            label_id = str(props.get(ID_FIELD) or uuid.uuid4().hex)
            props.update({ID_FIELD: label_id, CLASS_FIELD: code, NAME_FIELD: names[code].name})
            props.setdefault(AUTHOR_FIELD, self.author)
            props.setdefault(TIME_FIELD, now_iso())
            loaded[label_id] = {"type": "Feature", "geometry": f["geometry"], "properties": props}
        if undoable:
            self._checkpoint("loaded")
        else:
            self._history.clear()
        self._features = loaded
        self._changed("loaded")

    # -- draw-control events --------------------------------------------------------------------

    def apply_event(self, action: str, geo_json: Feature, active_class: int) -> str | None:
        """Apply one DrawControl event; returns the affected ``label_id`` (None if unknown).

        ``created`` shapes join ``active_class``; ``edited`` and ``deleted`` are
        matched by the ``label_id`` the shape carries since the store was pushed
        to the control.
        """
        props = geo_json.get("properties") or {}
        label_id = props.get(ID_FIELD)
        geometry = geo_json.get("geometry")
        if action == "created":
            return self.add(geometry, active_class)  # type: ignore[arg-type]
        if action == "edited":
            return label_id if label_id and self.update_geometry(label_id, geometry) else None  # type: ignore[arg-type]
        if action == "deleted":
            return label_id if label_id and self.remove(label_id) else None
        return None
