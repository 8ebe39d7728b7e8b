"""A static page to share: a scene, its labels and a classification, with a legend.

:func:`share_page` writes one HTML file (folium) that a user can mail to a
colleague. The scene and the classification are baked into the page as image
overlays (a reprojected, stretched preview of at most ``max_size`` pixels,
read from overviews or decimated, never the full raster), the labels as
GeoJSON coloured by class, and a legend lists both class sets.

Offline (the default) the page is self-contained: Leaflet's JS and CSS are
inlined from the npm package in ``node_modules/leaflet`` (its images as data
URIs) and folium's other CDN assets (jQuery, Bootstrap, Font Awesome,
awesome-markers) are dropped, because nothing on this page uses them. No
request leaves the file, and there is no base map. Online pages keep folium's
CDN assets and add an OpenStreetMap base layer.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoportal.atomic import atomic_write_text
from geoportal.classes import ClassInfo
from geoportal.errors import InvalidInputError, StorageNotFoundError
from geoportal.storage import Storage
from geoportal.tiles import (
    TileRenderer,
    TileStyle,
    default_bands,
    encode_png,
    read_classes,
    render_classes,
    rescale,
)

WEB_MERCATOR = "EPSG:3857"


def find_leaflet_assets() -> Path:
    """The folder holding ``leaflet.js``/``leaflet.css`` (npm package ``leaflet``).

    Looked up in ``$GEOPORTAL_LEAFLET_DIR``, then ``node_modules/leaflet/dist``
    beside the repository and in the current folder.

    Raises:
        StorageNotFoundError: Leaflet is not installed (run ``npm install``).
    """
    candidates = []
    if os.environ.get("GEOPORTAL_LEAFLET_DIR"):
        candidates.append(Path(os.environ["GEOPORTAL_LEAFLET_DIR"]))
    here = Path(__file__).resolve()
    candidates += [p / "node_modules" / "leaflet" / "dist" for p in here.parents]
    candidates.append(Path.cwd() / "node_modules" / "leaflet" / "dist")
    for folder in candidates:
        if (folder / "leaflet.js").exists() and (folder / "leaflet.css").exists():
            return folder
    raise StorageNotFoundError(
        "Leaflet assets for offline pages are missing: run `npm install` in the repository "
        "or set GEOPORTAL_LEAFLET_DIR to a folder with leaflet.js and leaflet.css",
        field="offline",
    )


def _inline_css(css: str, folder: Path) -> str:
    def data_uri(match: re.Match[str]) -> str:
        target = folder / match.group(1)
        if not target.exists():
            return match.group(0)
        encoded = base64.b64encode(target.read_bytes()).decode()
        return f"url(data:image/png;base64,{encoded})"

    return re.sub(r"url\((images/[^)]+\.png)\)", data_uri, css)


def make_offline(page: str, assets: Path | None = None) -> str:
    """Replace every CDN ``<script>``/``<link>`` of a folium page by inlined Leaflet.

    Raises:
        InvalidInputError: a remote asset other than folium's known defaults remains.
    """
    assets = assets or find_leaflet_assets()
    js = (assets / "leaflet.js").read_text(encoding="utf-8")
    css = _inline_css((assets / "leaflet.css").read_text(encoding="utf-8"), assets)
    script = re.compile(r'<script\s+src="(https?:[^"]+)"\s*>\s*</script>')
    link = re.compile(r'<link\s+rel="stylesheet"\s+href="(https?:[^"]+)"\s*/?>')

    def replace_script(match: re.Match[str]) -> str:
        if re.search(r"/leaflet(@[^/]+)?/dist/leaflet\.js$", match.group(1)):
            return "<script>" + js.replace("</script", "<\\/script") + "</script>"
        return ""

    def replace_link(match: re.Match[str]) -> str:
        if re.search(r"/leaflet(@[^/]+)?/dist/leaflet\.css$", match.group(1)):
            return "<style>" + css + "</style>"
        return ""

    page = link.sub(replace_link, script.sub(replace_script, page))
    leftover = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]+)"', page)
    if leftover:
        raise InvalidInputError(
            f"the page still loads remote assets: {leftover[:3]}", field="offline"
        )
    return page


def _overlay_png(
    path: Path, style: TileStyle | None, max_size: int, renderer: TileRenderer
) -> tuple[str, list[list[float]], list[ClassInfo] | None]:
    """A PNG data URI of the scene in Web Mercator, its lat/lon bounds, its classes."""
    from rasterio.warp import transform_bounds
    from rio_tiler.io import Reader

    from geoportal.raster import open_scene

    with open_scene(path) as dataset:
        classes = read_classes(dataset)
        count = dataset.count
        bounds_3857 = transform_bounds(dataset.crs, WEB_MERCATOR, *dataset.bounds, densify_pts=21)
        colormap = None
        if classes is not None:
            try:
                colormap = {int(k): tuple(v) for k, v in dataset.colormap(1).items()}
            except ValueError:
                colormap = None
    style = style or TileStyle()
    bands = (1,) if classes is not None else (style.bands or default_bands(count))
    if max(bands) > count:
        raise InvalidInputError(f"bands {list(bands)}: the scene has {count}", field="bands")
    with Reader(str(path)) as src:
        image = src.part(
            bounds_3857, dst_crs=WEB_MERCATOR, bounds_crs=WEB_MERCATOR, indexes=bands,
            max_size=max_size,
        )  # fmt: skip
    valid = np.asarray(~np.ma.getmaskarray(image.array).any(axis=0))
    values = np.ma.getdata(image.array)
    if classes is not None:
        png = render_classes(values[0], valid, classes, colormap)
    else:
        png = encode_png(rescale(values, renderer.band_ranges(path, style, bands)), valid, 6)
    west, south, east, north = transform_bounds(WEB_MERCATOR, "EPSG:4326", *bounds_3857)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    return uri, [[south, west], [north, east]], classes


def _legend_html(sections: Sequence[tuple[str, Sequence[ClassInfo]]]) -> str:
    parts = []
    for title, classes in sections:
        if not classes:
            continue
        rows = "".join(
            f"<div><span style='display:inline-block;width:14px;height:14px;margin-right:6px;"
            f"vertical-align:middle;background:{c.color};border:1px solid #333'></span>"
            f"{html.escape(c.name)}</div>"
            for c in classes
        )
        head = f"<div style='font-weight:bold;margin-top:4px'>{html.escape(title)}</div>"
        parts.append(head + rows)
    return (
        "<div id='geoportal-legend' style='position:fixed;bottom:24px;right:12px;z-index:1000;"
        "background:rgba(255,255,255,0.92);padding:8px 10px;border-radius:4px;"
        "font:13px sans-serif;box-shadow:0 1px 4px rgba(0,0,0,0.4)'>" + "".join(parts) + "</div>"
    )


def share_page(
    scene: str,
    out: str | os.PathLike[str],
    *,
    user: str,
    storage: Storage,
    labels: str | None = None,
    class_field: str = "class",
    classification: str | None = None,
    style: TileStyle | None = None,
    offline: bool = True,
    max_size: int = 1024,
    title: str | None = None,
) -> Path:
    """Write a shareable HTML map of ``scene`` (+ labels, + classification).

    Args:
        scene: storage location of the raster.
        out: where to write the page (a local path, e.g. in the user's area).
        user: the caller; every location passes the storage resolver for them.
        storage: the storage.
        labels: storage location of a labelset (GeoPackage etc.).
        class_field: the labels' class field.
        classification: storage location of a classification raster.
        style: bands and stretch of the scene.
        offline: self-contained page (inlined Leaflet, no base map) or CDN + OSM.
        max_size: longest side of the baked scene image, in pixels.
        title: page title (default: the scene's file name).

    Returns:
        The page's path (written atomically).
    """
    import folium

    from geoportal.labels import class_name_color, read_labels
    from geoportal.labelstore import vector_layer

    renderer = TileRenderer(storage)
    scene_path = storage.resolve(user, scene, must_exist=True, field="scene")
    uri, bounds, _ = _overlay_png(scene_path, style, max_size, renderer)
    fmap = folium.Map(tiles="OpenStreetMap" if offline is False else None, control_scale=True)
    root_element: Any = fmap.get_root()
    root_element.title = title or Path(scene).name
    folium.raster_layers.ImageOverlay(uri, bounds=bounds, name="scene", zindex=1).add_to(fmap)
    sections: list[tuple[str, Sequence[ClassInfo]]] = []

    if classification:
        class_path = storage.resolve(user, classification, must_exist=True, field="classification")
        c_uri, c_bounds, c_classes = _overlay_png(class_path, None, max_size, renderer)
        if c_classes is None:
            raise InvalidInputError(
                f"classification {classification} has no classes (colour table or "
                "GEOPORTAL_CLASSES metadata)",
                field="classification",
            )
        folium.raster_layers.ImageOverlay(
            c_uri, bounds=c_bounds, name="classification", opacity=0.7, zindex=2
        ).add_to(fmap)
        sections.append(("classification", c_classes))

    if labels:
        labels_path = storage.resolve(user, labels, must_exist=True, field="labels")
        labelset = read_labels(
            labels_path, class_field, target_crs="EPSG:4326", layer=vector_layer(labels_path)
        )
        frame = labelset.features
        colours = {c.code: c.color for c in labelset.classes}
        frame = frame.assign(
            _color=[colours[int(c)] for c in frame["class_code"]],
            _name=[class_name_color(int(c), labelset.classes)[0] for c in frame["class_code"]],
        )[["_color", "_name", "geometry"]]
        folium.GeoJson(
            frame.to_json(drop_id=True),
            name="labels",
            style_function=lambda f: {
                "color": f["properties"]["_color"], "fillColor": f["properties"]["_color"],
                "weight": 2, "fillOpacity": 0.35,
            },
            marker=folium.CircleMarker(radius=6, fill=True, fill_opacity=0.9, weight=2),
            tooltip=folium.GeoJsonTooltip(fields=["_name"], aliases=["class"]),
        ).add_to(fmap)  # fmt: skip
        sections.insert(0, ("labels", labelset.classes))

    fmap.fit_bounds(bounds)
    folium.LayerControl(collapsed=False).add_to(fmap)
    root_element.html.add_child(folium.Element(_legend_html(sections)))
    page = fmap.get_root().render()
    if offline:
        page = make_offline(page)
    return Path(atomic_write_text(out, page))
