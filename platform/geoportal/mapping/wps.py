"""The map's processing calls, through the platform's WPS client.

The labeling map runs extract-samples, run-inference and assess-accuracy with
:class:`geoportal.wpsclient.WpsClient` (OWSLib, asynchronous, status polling),
under the public contract of identifiers and inputs, exactly as a GIS client
would. Authentication is the hub's: the token in ``JUPYTERHUB_API_TOKEN`` (a
single-user server has one) goes in an ``Authorization: token …`` header.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from geoportal.wpsclient import WpsClient, WpsResult

Progress = Callable[[float, str], None]
CLASS_FIELD = "class"


class MapProcesses:
    """The three processes the map offers, with progress as a fraction (0..1).

    Args:
        url: the WPS endpoint (``…/services/wps/wps`` behind the hub).
        token: hub API token; defaults to ``$JUPYTERHUB_API_TOKEN`` when set.
    """

    def __init__(self, url: str, token: str | None = None) -> None:
        token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN")
        self.client = WpsClient(url, token=token)

    def _run(self, identifier: str, inputs: dict[str, Any], progress: Progress | None) -> WpsResult:
        def percent(value: float, message: str) -> None:
            if progress:
                progress(value / 100.0, message)

        return self.client.execute(identifier, inputs, progress=percent)

    def extract_samples(
        self, raster: str, labels: str, patch_size: int, progress: Progress | None = None
    ) -> WpsResult:
        inputs = {"raster": raster, "labels": labels, "class_field": CLASS_FIELD,
                  "patch_size": patch_size}  # fmt: skip
        return self._run("extract-samples", inputs, progress)

    def run_inference(self, raster: str, model: str, progress: Progress | None = None) -> WpsResult:
        return self._run("run-inference", {"raster": raster, "model": model}, progress)

    def assess_accuracy(
        self, classification: str, reference: str, progress: Progress | None = None
    ) -> WpsResult:
        inputs = {"classification": classification, "reference": reference,
                  "class_field": CLASS_FIELD}  # fmt: skip
        return self._run("assess-accuracy", inputs, progress)

    def fetch_text(self, reference: str) -> str:
        """A (small) output, e.g. the accuracy report, fetched with the same credentials."""
        return self.client.fetch(reference).decode("utf-8")
