"""The labeling map: draw training samples by class over a storage scene.

:class:`LabelingMap` is an ipyleaflet map with

* the scene as tiles from the tile service (band combination, percentile
  stretch and opacity controls); a base map when online, none offline;
* a class legend set up front and an active-class picker; polygons,
  rectangles and points are drawn in the active class and coloured by class;
* a :class:`~geoportal.mapping.store.FeatureStore` as the truth: edits and
  deletions are matched by a ``label_id`` each shape carries, undo takes back
  the last change;
* explicit save and a debounced autosave to ``users/<me>/labels/<labelset>.gpkg``
  (versions of earlier saves are kept by :mod:`geoportal.labelstore`);
* a statistics panel (count and area per class);
* processing through the WPS (extract samples, inference shown as a layer
  with a legend, accuracy against these labels), with progress.
"""

from __future__ import annotations

import getpass
import html
import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from geoportal.classes import ClassInfo, by_code, make_classes
from geoportal.errors import GeoportalError, InvalidInputError
from geoportal.labelstore import LabelStore, class_statistics, vector_layer
from geoportal.mapping.store import FeatureStore, class_style
from geoportal.storage import Storage
from geoportal.tiles import TileRenderer, TileStyle, tile_url_template

MAP_PIXELS = 640  # nominal map size used to choose the first zoom


def _user() -> str:
    env = os.environ
    return env.get("GEOPORTAL_USER") or env.get("JUPYTERHUB_USER") or getpass.getuser()


def _storage() -> Storage:
    from geoportal.settings import load_settings
    from geoportal.storage import storage_from_settings

    return storage_from_settings(load_settings())


def _hub_tiles_url() -> str:
    # Same origin as JupyterLab: the browser reaches the hub service through the proxy.
    return os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/services/tiles"


def _default_wps_url() -> str:
    """The OGC endpoint from the settings (``<public_url>/wps`` behind the hub), if any."""
    from geoportal.settings import load_settings

    try:
        wps = load_settings().wps
    except GeoportalError:
        return ""
    return wps.public_url.rstrip("/") + "/wps" if wps.public_url else ""


def _classes(classes: Sequence[ClassInfo] | Mapping[int, str] | None) -> list[ClassInfo] | None:
    if classes is None:
        return None
    if isinstance(classes, Mapping):
        return make_classes({int(k): str(v) for k, v in classes.items()})
    return sorted(classes, key=lambda c: c.code)


def _offline() -> bool:
    return os.environ.get("GEOPORTAL_OFFLINE", "").lower() in ("1", "true", "yes")


def initial_view(bounds: tuple[float, float, float, float]) -> tuple[tuple[float, float], int]:
    """Centre (lat, lon) and the largest zoom at which ``bounds`` fit a ~640 px map."""
    west, south, east, north = bounds
    span = max(east - west, (north - south) * 1.3, 1e-6)
    zoom = int(max(0, min(18, math.floor(math.log2(360.0 * MAP_PIXELS / (span * 256.0))))))
    return ((south + north) / 2, (west + east) / 2), zoom


class LabelingMap:
    """An ipyleaflet map to label a scene; display it in a notebook cell.

    Args:
        scene: storage location of the raster (``datasets/…`` or ``users/<me>/…``).
        classes: the legend: ClassInfo list or ``{code: name}``; may be omitted
            when ``labelset`` exists (its classes are used).
        labelset: name of the labelset under ``users/<me>/labels/``; loaded if it exists.
        user: the storage user (default ``$GEOPORTAL_USER``, ``$JUPYTERHUB_USER``, login).
        storage: the storage (default: from the settings).
        tile_url: base URL of the tile service (default ``$GEOPORTAL_TILES_URL``,
            else the hub's ``/services/tiles``).
        wps_url: the WPS's OGC endpoint for processing (default ``$GEOPORTAL_WPS_URL``,
            else ``<wps.public_url>/wps`` from the settings).
        basemap: show OpenStreetMap below the scene; default: yes unless
            ``$GEOPORTAL_OFFLINE`` is set.
        bands, stretch, opacity: the first rendering of the scene.
        autosave_seconds: save this long after the last change (0 disables).
    """

    def __init__(
        self,
        scene: str,
        classes: Sequence[ClassInfo] | Mapping[int, str] | None = None,
        *,
        labelset: str = "labels",
        user: str | None = None,
        storage: Storage | None = None,
        tile_url: str | None = None,
        wps_url: str | None = None,
        basemap: bool | None = None,
        bands: Sequence[int] | None = None,
        stretch: tuple[float, float] = (2.0, 98.0),
        opacity: float = 1.0,
        autosave_seconds: float = 2.0,
    ) -> None:
        self.user = user or _user()
        self.storage = storage or _storage()
        self.scene = scene
        self.labelstore = LabelStore(self.storage, self.user)
        self.labelset = labelset
        self.labelstore.path(labelset)  # validates the name now, not at the first save
        self.tile_url = tile_url or os.environ.get("GEOPORTAL_TILES_URL") or _hub_tiles_url()
        self.wps_url = wps_url or os.environ.get("GEOPORTAL_WPS_URL") or _default_wps_url()
        self.autosave_seconds = autosave_seconds
        self.summary = TileRenderer(self.storage).summary(self.user, scene)
        self.scene_crs = self._scene_crs()
        # Labels are saved in the scene's CRS, or in the CRS an existing labelset has.
        self.crs = self.scene_crs

        existing = None
        if self.labelstore.path(labelset).exists():
            existing = self.labelstore.load(labelset)
            if existing.crs is not None:
                epsg = existing.crs.to_epsg()
                self.crs = f"EPSG:{epsg}" if epsg else existing.crs.to_wkt()
        given = _classes(classes)
        if given is None and existing is not None and existing.classes:
            given = existing.classes
        if not given:
            raise InvalidInputError(
                "give the class legend, e.g. classes={1: 'forest', 2: 'water'}", field="classes"
            )
        self.classes = given
        self.store = FeatureStore(self.classes, author=self.user)
        if existing is not None and len(existing.features):
            self.store.replace_all(_to_geojson_features(existing.features))

        self.style = TileStyle(bands=tuple(bands or self.summary.default_bands), stretch=stretch)
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self.classification: str | None = None
        self.saved_path = self.labelstore.path(labelset)
        self.location = self.labelstore.location(labelset)
        self.last_result: Any = None
        self._build(basemap if basemap is not None else not _offline(), opacity)
        self.store.on_change(self._on_store_change)
        self._refresh()

    # -- construction ---------------------------------------------------------------------------

    def _scene_crs(self) -> str:
        from geoportal.raster import open_scene

        path = self.storage.resolve(self.user, self.scene, must_exist=True, field="scene")
        with open_scene(path) as dataset:
            # rasterio recognises EPSG codes that pyproj misses in GDAL's WKT1 (TOWGS84).
            epsg = dataset.crs.to_epsg()
            return f"EPSG:{epsg}" if epsg else dataset.crs.to_wkt()

    def _build(self, basemap: bool, opacity: float) -> None:
        import ipyleaflet as leaflet
        import ipywidgets as widgets

        center, zoom = initial_view(self.summary.bounds_wgs84)
        self.map = leaflet.Map(
            center=center, zoom=zoom, scroll_wheel_zoom=True,
            layout=widgets.Layout(height="600px", width="100%"),
        )  # fmt: skip
        if not basemap:
            for layer in list(self.map.layers):
                self.map.remove_layer(layer)
        self.scene_layer = leaflet.TileLayer(
            url=self._scene_url(), name="scene", opacity=opacity,
            max_native_zoom=self.summary.maxzoom, max_zoom=22, attribution="geoportal",
        )  # fmt: skip
        self.map.add(self.scene_layer)
        self.classification_layer: Any = None
        self.classification_legend: Any = None
        # Points, as class-coloured dots; in "delete points" mode a click removes one.
        self.points_layer = leaflet.GeoJSON(
            data={"type": "FeatureCollection", "features": []}, name="points",
            point_style={"radius": 7, "weight": 2, "fillOpacity": 0.9},
            style_callback=lambda feature: feature["properties"].get("style", {}),
        )  # fmt: skip
        self.points_layer.on_click(self._on_point_click)
        self.map.add(self.points_layer)
        active = self.classes[0]
        self.draw = leaflet.DrawControl(
            polygon={"shapeOptions": class_style(active, "Polygon")},
            rectangle={"shapeOptions": class_style(active, "Polygon")},
            marker={"repeatMode": False},
            circlemarker={}, polyline={}, circle={},
            edit=True, remove=True,
        )  # fmt: skip
        self.draw.on_draw(self._on_draw)
        # The browser also sends its own copy of the shapes (without our ids, styled
        # with the draw tool's colours) right after each event, and it may arrive after
        # our push: whenever the control's data differs from the store, push the store.
        self.draw.observe(self._on_draw_data, names="data")
        self.map.add(self.draw)
        self.legend = leaflet.LegendControl(
            {c.name: c.color for c in self.classes}, title="classes", position="bottomright"
        )
        self.map.add(self.legend)

        # Controls.
        self.class_picker = widgets.ToggleButtons(
            options=[(c.name, c.code) for c in self.classes], value=active.code,
            description="class", style={"button_width": "auto"},
        )  # fmt: skip
        self.class_picker.observe(self._on_class, names="value")
        self.bands_text = widgets.Text(
            continuous_update=False,
            value=",".join(str(b) for b in self.style.bands), description="bands",
            placeholder="4,3,2 or 5",
            tooltip=" / ".join(f"{i + 1}: {n}" for i, n in enumerate(self.summary.band_names)),
            layout=widgets.Layout(width="180px"),
        )  # fmt: skip
        self.stretch_slider = widgets.FloatRangeSlider(
            value=self.style.stretch, min=0, max=100, step=0.5, description="stretch %",
            continuous_update=False,
        )  # fmt: skip
        self.opacity_slider = widgets.FloatSlider(
            value=opacity, min=0, max=1, step=0.05, description="opacity"
        )
        widgets.jslink((self.opacity_slider, "value"), (self.scene_layer, "opacity"))
        self.bands_text.observe(lambda _: self._restyle(), names="value")
        self.stretch_slider.observe(lambda _: self._restyle(), names="value")
        self.save_button = widgets.Button(description="Save", icon="save", button_style="primary")
        self.undo_button = widgets.Button(description="Undo", icon="undo")
        self.delete_points = widgets.ToggleButton(
            value=False, description="delete points", icon="eraser",
            tooltip="while on, clicking a point deletes it",
        )  # fmt: skip
        self.save_button.on_click(lambda _: self.save())
        self.undo_button.on_click(lambda _: self.undo())
        self.status = widgets.HTML(value="")
        self.stats_panel = widgets.HTML(value="")
        band_help = widgets.HTML(
            "<small>"
            + "<br>".join(
                f"{i + 1}: {html.escape(n)}" for i, n in enumerate(self.summary.band_names)
            )
            + "</small>"
        )
        # Processing through the WPS.
        self.model_text = widgets.Text(description="model", placeholder="users/<me>/models/<run>")
        self.patch_size = widgets.BoundedIntText(value=9, min=1, max=255, description="patch")
        self.extract_button = widgets.Button(description="Extract samples")
        self.infer_button = widgets.Button(description="Run inference")
        self.accuracy_button = widgets.Button(description="Accuracy report")
        self.extract_button.on_click(lambda _: self._in_background(self.extract_samples))
        self.infer_button.on_click(lambda _: self._in_background(self.run_inference))
        self.accuracy_button.on_click(lambda _: self._in_background(self.assess_accuracy))
        self.progress_bar = widgets.FloatProgress(value=0, min=0, max=1, description="progress")
        self.process_output = widgets.HTML(value="")
        processing = widgets.VBox(
            [
                self.model_text, self.patch_size,
                widgets.HBox([self.extract_button, self.infer_button, self.accuracy_button]),
                self.progress_bar, self.process_output,
            ]
        )  # fmt: skip
        side = widgets.VBox(
            [
                widgets.HTML(f"<b>{html.escape(self.scene)}</b>"),
                self.bands_text, band_help, self.stretch_slider, self.opacity_slider,
                widgets.HTML("<b>labels</b>: " + html.escape(self.location)),
                widgets.HBox([self.save_button, self.undo_button, self.delete_points]),
                self.status,
                widgets.HTML("<b>statistics</b>"), self.stats_panel,
                widgets.HTML("<b>processing (WPS)</b>"), processing,
            ],
            layout=widgets.Layout(width="380px"),
        )  # fmt: skip
        self.widget = widgets.VBox(
            [self.class_picker, widgets.HBox([self.map, side], layout=widgets.Layout(width="100%"))]
        )
        self.widget.add_class("geoportal-labeling-map")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _scene_url(self) -> str:
        return tile_url_template(self.tile_url, self.scene, self.style)

    # -- rendering controls ---------------------------------------------------------------------

    def set_style(
        self, bands: Sequence[int] | None = None, stretch: tuple[float, float] | None = None
    ) -> None:
        """Change the band combination and/or stretch of the scene layer."""
        try:
            style = TileStyle(
                bands=tuple(bands) if bands is not None else self.style.bands,
                stretch=tuple(stretch) if stretch is not None else self.style.stretch,  # type: ignore[arg-type]
            )
        except ValueError as exc:
            raise InvalidInputError(str(exc), field="bands") from None
        if style.bands and max(style.bands) > self.summary.count:
            raise InvalidInputError(
                f"bands {list(style.bands)}: the scene has {self.summary.count}", field="bands"
            )
        self.style = style
        self.scene_layer.url = self._scene_url()

    def _restyle(self) -> None:
        try:
            bands = [int(b) for b in self.bands_text.value.replace(" ", "").split(",") if b]
            self.set_style(bands, tuple(self.stretch_slider.value))  # type: ignore[arg-type]
            self._say("")
        except (ValueError, GeoportalError) as exc:
            self._say(f"bands: {exc}", error=True)

    # -- drawing --------------------------------------------------------------------------------

    @property
    def active_class(self) -> int:
        return int(self.class_picker.value)

    @active_class.setter
    def active_class(self, code: int) -> None:
        self.class_picker.value = int(code)

    def _on_class(self, change: dict[str, Any]) -> None:
        info = by_code(self.classes)[int(change["new"])]
        self.draw.polygon = {"shapeOptions": class_style(info, "Polygon")}
        self.draw.rectangle = {"shapeOptions": class_style(info, "Polygon")}

    def _on_draw(self, _control: Any, action: str, geo_json: dict[str, Any]) -> None:
        try:
            self.store.apply_event(action, geo_json, self.active_class)
        except GeoportalError as exc:
            self._say(str(exc), error=True)
            self._push()

    def _on_draw_data(self, change: dict[str, Any]) -> None:
        ids = [(f.get("properties") or {}).get("label_id") for f in change["new"] or []]
        expected = sorted(f["properties"]["label_id"] for f in self._shapes())
        if None in ids or sorted(str(i) for i in ids) != expected:
            self._push()

    def _on_point_click(self, feature: dict[str, Any] | None = None, **_: Any) -> None:
        if self.delete_points.value and feature:
            self.store.remove((feature.get("properties") or {}).get("label_id", ""))

    def import_labels(self, location: str, class_field: str, *, by: str = "name") -> int:
        """Add the features of an existing labelset (e.g. a shared one) to the map.

        Classes are matched to the legend by ``name`` (the labelset's class names)
        or by ``code``; features of classes not in the legend are skipped. The
        import is one undoable change. Returns the number of features added.
        """
        import shapely

        from geoportal.labels import read_labels

        path = self.storage.resolve(self.user, location, must_exist=True, field="labels")
        labels = read_labels(path, class_field, target_crs="EPSG:4326", layer=vector_layer(path))
        names = {c.code: c.name for c in labels.classes}
        legend = {c.name: c.code for c in self.classes} if by == "name" else None
        features = self.store.features()
        added = 0
        for code, geom in zip(labels.features["class_code"], labels.features.geometry, strict=True):
            target = legend.get(names[int(code)]) if legend is not None else int(code)
            if target is None or target not in by_code(self.classes):
                continue
            features.append(
                {"type": "Feature", "geometry": json.loads(shapely.to_geojson(geom)),
                 "properties": {"class": target}}
            )  # fmt: skip
            added += 1
        self.store.replace_all(features, undoable=True)
        if self.autosave_seconds > 0:
            self._schedule_save()
        return added

    def undo(self) -> str | None:
        """Take back the last change."""
        action = self.store.undo()
        self._say(f"undid: {action}" if action else "nothing to undo")
        return action

    def _on_store_change(self, action: str) -> None:
        # After an edit or a deletion the browser's shapes already match the store;
        # re-sending them would rebuild the layers under Leaflet.draw's edit mode.
        self._refresh(push=action not in ("edited", "deleted"))
        if self.autosave_seconds > 0 and action != "loaded":
            self._schedule_save()

    def _shapes(self) -> list[dict[str, Any]]:
        # Points stay out of the draw control: Leaflet.draw's edit mode crashes when the
        # control's own data sync rebuilds a marker (its dragging handler is gone), which
        # leaves edit mode stuck. Points are shown, coloured, by ``points_layer`` instead.
        return [f for f in self.store.to_geojson() if f["geometry"]["type"] != "Point"]

    def _push(self) -> None:
        features = self._shapes()
        if self.draw.data == features:
            self.draw.send_state("data")
        else:
            self.draw.data = features

    def _refresh(self, *, push: bool = True) -> None:
        if push:
            self._push()
        points = [f for f in self.store.to_geojson() if f["geometry"]["type"] == "Point"]
        self.points_layer.data = {"type": "FeatureCollection", "features": points}
        self.stats_panel.value = self.stats_html()
        self.undo_button.disabled = not self.store.can_undo

    # -- statistics -----------------------------------------------------------------------------

    def statistics(self) -> list[Any]:
        """Count and area (m², in the scene's CRS) per class."""
        return class_statistics(self.store.to_frame(), self.classes, scene_crs=self.scene_crs)

    def stats_html(self) -> str:
        rows = []
        stats = self.statistics()
        total = sum(s.count for s in stats) or 1
        for s in stats:
            share = 100.0 * s.count / total
            rows.append(
                f"<tr><td><span style='display:inline-block;width:12px;height:12px;"
                f"background:{s.color}'></span> {html.escape(s.name)}</td>"
                f"<td style='text-align:right'>{s.count}</td>"
                f"<td style='text-align:right'>{s.area_m2 / 1e4:.2f}</td>"
                f"<td style='text-align:right'>{share:.0f}%</td></tr>"
            )
        return (
            "<style>.geoportal-stats td, .geoportal-stats th {padding: 0 8px}</style>"
            "<table class='geoportal-stats'><tr><th>class</th><th>count</th><th>ha</th>"
            "<th>share</th></tr>" + "".join(rows) + "</table>"
        )

    # -- saving ---------------------------------------------------------------------------------

    def _schedule_save(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.autosave_seconds, self._autosave)
            self._timer.daemon = True
            self._timer.start()

    def _autosave(self) -> None:
        try:
            self.save(note="autosaved")
        except Exception as exc:  # a background save must report, never raise into a thread
            self._say(f"autosave failed: {exc}", error=True)

    def save(self, *, note: str = "saved") -> Any:
        """Write the labelset now (atomically; the previous file becomes a version)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            frame = self.store.to_frame().to_crs(self.crs)
            path = self.labelstore.save(self.labelset, frame, self.classes, author=self.user)
        self.saved_path = path
        self._say(f"{note}: {len(frame)} feature(s) to {self.labelstore.location(self.labelset)}")
        return path

    def _say(self, message: str, *, error: bool = False) -> None:
        colour = "#b00020" if error else "#1b5e20"
        self.status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    # -- processing (WPS) -----------------------------------------------------------------------

    def _client(self) -> Any:
        from geoportal.mapping.wps import MapProcesses

        if not self.wps_url:
            raise InvalidInputError(
                "no WPS endpoint: pass wps_url= or set GEOPORTAL_WPS_URL", field="wps_url"
            )
        return MapProcesses(self.wps_url)

    def _progress(self, fraction: float, message: str) -> None:
        self.progress_bar.value = max(0.0, min(1.0, fraction))
        self.progress_bar.description = f"{fraction * 100:.0f}%"
        self.process_output.value = html.escape(message)

    def _in_background(self, func: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                func()
            except Exception as exc:  # shown in the panel: the kernel keeps running
                self.process_output.value = (
                    f"<span style='color:#b00020'>{html.escape(str(exc))}</span>"
                )

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def extract_samples(self) -> Any:
        """Save, then run extract-samples for this labelset over the scene."""
        self.save()
        result = self._client().extract_samples(
            self.scene, self.location, int(self.patch_size.value), progress=self._progress
        )
        self.last_result = result
        self.process_output.value = "samples: " + _link(result.outputs.get("samples", ""))
        return result

    def run_inference(self, model: str | None = None) -> Any:
        """Classify the scene with ``model`` (or the model field) and show it as a layer."""
        from geoportal.wpsclient import storage_location

        model = model or self.model_text.value.strip()
        if not model:
            raise InvalidInputError("choose a model (a .pt, a run folder)", field="model")
        result = self._client().run_inference(self.scene, model, progress=self._progress)
        self.last_result = result
        self.show_classification(storage_location(result.outputs["classification"]))
        self.process_output.value = "classification: " + _link(result.outputs["classification"])
        return result

    def assess_accuracy(self, classification: str | None = None) -> Any:
        """Accuracy of the shown (or given) classification against these labels."""
        self.save()
        classification = classification or self.classification
        if not classification:
            raise InvalidInputError("run inference or give a classification first", field="model")
        result = self._client().assess_accuracy(
            classification, self.location, progress=self._progress
        )
        self.last_result = result
        summary = ""
        if result.outputs.get("report"):
            try:
                report = json.loads(self._client().fetch_text(result.outputs["report"]))
                summary = html.escape(str(report.get("summary", ""))) + "<br>"
            except (OSError, ValueError, GeoportalError):  # the links still lead to it
                summary = ""
        self.accuracy_summary = summary
        self.process_output.value = f"{summary}accuracy report: " + " ".join(
            _link(result.outputs.get(k, ""), k) for k in ("html", "report", "plot")
        )
        return result

    def show_classification(self, location: str, opacity: float = 0.7) -> None:
        """Add a classification raster (storage location) as a layer with its legend."""
        import ipyleaflet as leaflet

        summary = TileRenderer(self.storage).summary(self.user, location)
        url = tile_url_template(self.tile_url, location, TileStyle(bands=(1,)))
        if self.classification_layer is not None:
            self.map.remove(self.classification_layer)
        if self.classification_legend is not None:
            self.map.remove(self.classification_legend)
        self.classification_layer = leaflet.TileLayer(
            url=url, name="classification", opacity=opacity, max_native_zoom=summary.maxzoom,
            max_zoom=22,
        )  # fmt: skip
        self.map.add(self.classification_layer)
        classes = summary.classes or []
        self.classification_legend = leaflet.LegendControl(
            {c.name: c.color for c in classes}, title="classification", position="topright"
        )
        self.map.add(self.classification_legend)
        self.classification = location


def _link(url: str, text: str | None = None) -> str:
    if not url:
        return ""
    return f"<a href='{html.escape(url)}' target='_blank'>{html.escape(text or url)}</a>"


def _to_geojson_features(frame: Any) -> list[dict[str, Any]]:
    import json

    geo = json.loads(frame.to_crs("EPSG:4326").to_json(drop_id=True))
    return list(geo["features"])
