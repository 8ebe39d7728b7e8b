"""The notebook door: the labeling map and the shareable static page.

This subpackage imports ipyleaflet/ipywidgets/folium lazily and is never
imported by ``import geoportal``; notebooks import it explicitly::

    from geoportal.mapping import LabelingMap
"""

from __future__ import annotations

from typing import Any

__all__ = ["FeatureStore", "LabelingMap", "share_page"]


def __getattr__(name: str) -> Any:
    if name == "LabelingMap":
        from geoportal.mapping.labeling import LabelingMap

        return LabelingMap
    if name == "FeatureStore":
        from geoportal.mapping.store import FeatureStore

        return FeatureStore
    if name == "share_page":
        from geoportal.mapping.share import share_page

        return share_page
    raise AttributeError(name)
