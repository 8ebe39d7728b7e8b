"""WPS process ``extract-samples``: cut training samples from a scene where labels are."""

from __future__ import annotations

import json
import re
from typing import Any

from pywps import FORMATS

from geoportal.errors import InvalidInputError
from geoportal.sampling.extract import ExtractConfig, extract_samples
from wps_processes.base import (
    FOLDER_FORMAT,
    GeoportalProcess,
    JobContext,
    literal_input,
    path_input,
    reference_output,
)

_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ExtractSamples(GeoportalProcess):
    identifier = "extract-samples"
    title = "Extract training samples"
    abstract = (
        "Cuts patch_size x patch_size patches around labelled pixels (mode=patch) or image/mask "
        "pairs on a grid over labelled areas (mode=segmentation) and writes them as a sample set "
        "under users/<you>/samples/<name>/, with per-band normalisation statistics."
    )
    example_inputs = {
        "raster": "datasets/lsat7_2000_6band.tif",
        "labels": "datasets/labels/landsat96_polygons.gpkg",
        "class_field": "label",
        "patch_size": "5",
    }

    def make_inputs(self) -> list[Any]:
        return [
            path_input("raster", "Scene", "Storage path or http(s) URL of the scene."),
            path_input("labels", "Labels", "Vector labelset (any CRS) or a label raster."),
            literal_input("class_field", "Class field", "Field with class names or codes.",
                          default=""),
            literal_input("patch_size", "Patch size", "Patch height and width in pixels.",
                          data_type="integer"),
            literal_input("mode", "Mode", "patch or segmentation.", default="patch",
                          allowed_values=["patch", "segmentation"]),
            literal_input("stride", "Stride", "Grid spacing in pixels (0: mode default).",
                          data_type="integer", default=0),
            literal_input("samples_per_polygon", "Samples per polygon",
                          "Random pixels per polygon instead of a stride (0: off).",
                          data_type="integer", default=0),
            literal_input("min_valid", "Minimum valid fraction",
                          "Windows with less valid (not nodata) data are skipped.",
                          data_type="float", default=1.0),
            literal_input("edge", "Edge handling", "skip, pad or shift.", default="skip",
                          allowed_values=["skip", "pad", "shift"]),
            literal_input("name", "Set name", "Folder name under users/<you>/samples/.",
                          default=""),
        ]  # fmt: skip

    def make_outputs(self) -> list[Any]:
        return [
            reference_output("samples", "Sample set", [FOLDER_FORMAT]),
            reference_output("summary", "Summary", [FORMATS.JSON]),
        ]

    def run(self, ctx: JobContext, request: Any, response: Any) -> None:
        raster = ctx.input_path(request, "raster", raster=True)
        labels = ctx.input_path(request, "labels")
        name = ctx.literal(request, "name", "") or f"set-{ctx.job_id[:8]}"
        if not _SET_NAME.match(name):
            raise InvalidInputError(
                f"name {name!r}: use letters, digits, '.', '_' and '-' (not starting with a dot)",
                field="name",
            )
        config = ExtractConfig(
            patch_size=ctx.literal(request, "patch_size"),
            mode=ctx.literal(request, "mode", "patch"),
            class_field=ctx.literal(request, "class_field", "") or None,
            stride=ctx.literal(request, "stride", 0) or None,
            samples_per_polygon=ctx.literal(request, "samples_per_polygon", 0) or None,
            min_valid=ctx.literal(request, "min_valid", 1.0),
            edge=ctx.literal(request, "edge", "skip"),
        )
        folder = ctx.storage.resolve(ctx.user, f"users/{ctx.user}/samples/{name}", write=True)
        result = extract_samples(
            raster, labels, folder, config,
            raster_ref=_ref(ctx, raster), labels_ref=ctx.storage.relative(labels),
            progress=ctx.progress_callback(response, 0, 95),
        )  # fmt: skip
        summary = ctx.output_path("summary.json")
        summary.write_text(
            json.dumps({"sample_set": ctx.storage.relative(folder), **result.summary}, indent=1)
        )
        ctx.set_output(response, "samples", folder)
        ctx.set_output(response, "summary", summary)


def _ref(ctx: JobContext, raster: str) -> str:
    if raster.startswith(("http://", "https://")):
        return raster
    return ctx.storage.relative(raster)


PROCESSES = [ExtractSamples]
