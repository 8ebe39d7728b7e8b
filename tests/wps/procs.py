"""TEST-ONLY WPS processes, published only by the servers the tests start.

They exercise what every real process relies on (inputs resolved through the
storage, outputs in the caller's run folder, progress, error mapping, queueing)
without depending on the real processes other areas are writing.
"""

from __future__ import annotations

import json
import time

import numpy as np
import rasterio
from pywps import FORMATS, Format

from geoportal.atomic import atomic_path, atomic_write_text
from geoportal.errors import GeoportalError, InvalidInputError, MissingInputError
from geoportal.raster import open_scene
from wps_processes.base import (
    GeoportalProcess,
    literal_input,
    path_input,
    reference_output,
)

TEXT = Format("text/plain", extension=".txt")


class FirstBand(GeoportalProcess):
    """Copy band 1 of a raster (a real GDAL read and write, in windows, with progress)."""

    identifier = "test-first-band"
    title = "TEST: copy the first band"
    abstract = "Test-only: writes band 1 of `raster` as a GeoTIFF."
    example_inputs = {"raster": "datasets/RGB.byte.tif", "scale": "2"}

    def make_inputs(self):
        return [
            path_input("raster", "Raster", "Storage path or http(s) URL of a raster."),
            literal_input("scale", "Scale", "Multiply values.", data_type="float", default=1.0),
        ]

    def make_outputs(self):
        return [
            reference_output("band", "First band", [FORMATS.GEOTIFF]),
            reference_output("stats", "Statistics", [FORMATS.JSON]),
        ]

    def run(self, ctx, request, response):
        src_path = ctx.input_path(request, "raster", raster=True)
        scale = float(ctx.literal(request, "scale", 1.0))
        if scale <= 0:
            raise InvalidInputError("scale must be > 0", field="scale")
        out = ctx.output_path("band1.tif")
        total = 0.0
        with open_scene(src_path) as src:
            profile = src.profile | {"count": 1, "dtype": "float32", "driver": "GTiff"}
            windows = [w for _, w in src.block_windows(1)]
            with atomic_path(out) as tmp, rasterio.open(tmp, "w", **profile) as dst:
                for i, window in enumerate(windows):
                    data = src.read(1, window=window).astype(np.float32) * scale
                    total += float(data.sum())
                    dst.write(data, 1, window=window)
                    ctx.progress(response, 100 * (i + 1) / len(windows), "copying")
        stats = atomic_write_text(ctx.output_path("stats.json"), json.dumps({"sum": total}))
        ctx.set_output(response, "band", out)
        ctx.set_output(response, "stats", stats)


class ReadText(GeoportalProcess):
    """Read any storage file the caller may read (confinement of inputs)."""

    identifier = "test-read"
    title = "TEST: read a file"
    abstract = "Test-only: copies a readable file into the run folder."
    example_inputs = {"location": "{test-sleep:result}"}

    def make_inputs(self):
        return [path_input("location", "Location", "A storage path or an issued URL.")]

    def make_outputs(self):
        return [reference_output("copy", "Copy", [TEXT])]

    def run(self, ctx, request, response):
        src = ctx.input_path(request, "location")
        out = atomic_write_text(ctx.output_path("copy.txt"), src.read_text())
        ctx.set_output(response, "copy", out)


class WriteText(GeoportalProcess):
    """Write to a caller-chosen storage location (confinement of outputs)."""

    identifier = "test-write"
    title = "TEST: write a file"
    abstract = "Test-only: writes 'hello' to a storage location of the caller's choice."
    example_inputs = {"target": "users/alice/labels/hello.txt"}

    def make_inputs(self):
        return [path_input("target", "Target", "Where to write, under users/<me>/.")]

    def make_outputs(self):
        return [reference_output("written", "Written file", [TEXT])]

    def run(self, ctx, request, response):
        target = ctx.storage.resolve(
            ctx.user, ctx.literal(request, "target"), write=True, field="target"
        )
        atomic_write_text(target, "hello")
        ctx.set_output(response, "written", target)


class Sleep(GeoportalProcess):
    """Wait, reporting progress (queueing, load and restart tests)."""

    identifier = "test-sleep"
    title = "TEST: sleep"
    abstract = "Test-only: sleeps, then writes a small JSON file."
    example_inputs = {"seconds": "0.5", "tag": "example"}

    def make_inputs(self):
        return [
            literal_input("seconds", "Seconds", "How long.", data_type="float", default=0.5),
            literal_input("tag", "Tag", "Echoed in the output.", default="-"),
        ]

    def make_outputs(self):
        return [reference_output("result", "Result", [FORMATS.JSON])]

    def run(self, ctx, request, response):
        seconds = float(ctx.literal(request, "seconds", 0.5))
        steps = 5
        for i in range(steps):
            time.sleep(seconds / steps)
            ctx.progress(response, 100 * (i + 1) / steps, f"step {i + 1}/{steps}")
        out = atomic_write_text(
            ctx.output_path("result.json"),
            json.dumps({"tag": ctx.literal(request, "tag", "-"), "user": ctx.user}),
        )
        ctx.set_output(response, "result", out)


class Fail(GeoportalProcess):
    """Raise the error named by ``kind`` (error mapping)."""

    identifier = "test-fail"
    title = "TEST: fail"
    abstract = "Test-only: raises invalid, missing, core or bug errors."

    def make_inputs(self):
        return [literal_input("kind", "Kind", "invalid, missing, core or bug.")]

    def make_outputs(self):
        return [reference_output("never", "Never written", [TEXT])]

    def run(self, ctx, request, response):
        kind = ctx.literal(request, "kind")
        if kind == "invalid":
            raise InvalidInputError("threshold must be between 0 and 1", field="threshold")
        if kind == "missing":
            raise MissingInputError(
                "class_field is required: name the label column", field="class_field"
            )
        if kind == "core":
            raise GeoportalError("the model gallery is empty: train a model first")
        raise RuntimeError("secret internal detail /etc/shadow")


TEST_PROCESSES = [FirstBand, ReadText, WriteText, Sleep, Fail]
