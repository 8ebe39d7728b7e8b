"""WPS process ``assess-accuracy``: a classification scored against labels with PyCM."""

from __future__ import annotations

from typing import Any

from pywps import FORMATS, Format
from pywps.response.status import WPS_STATUS

from geoportal.accuracy import assess_accuracy, write_assessment
from geoportal.accuracy.assess import parse_options
from wps_processes.base import (
    GeoportalProcess,
    JobContext,
    literal_input,
    path_input,
    reference_output,
)


class AssessAccuracy(GeoportalProcess):
    identifier = "assess-accuracy"
    title = "Assess accuracy"
    abstract = (
        "Compares a classification raster with reference labels (a labelset of polygons or "
        "points in any CRS, or a label raster on the same grid) only where labels exist, "
        "excluding nodata on either side. The confusion matrix is counted in windows and scored "
        "with PyCM: report (JSON: PyCM's overall and per-class statistics, pixel counts, "
        "exclusions), PyCM's HTML report, and a PNG of the matrix. With a baseline (a second "
        "classification of the same scene) both are scored on the same pixels and compared with "
        "PyCM's Compare; the report names the better version and by how much."
    )
    example_inputs = {
        "classification": "{run-inference:classification}",
        "reference": "datasets/labels/landsat96_polygons.gpkg",
        "class_field": "id",
    }

    def make_inputs(self) -> list[Any]:
        return [
            path_input("classification", "Classification",
                       "Classification raster (uint8 codes, nodata 255, GEOPORTAL_CLASSES tag)."),
            path_input("reference", "Reference",
                       "Labelset (GeoPackage, GeoJSON, Shapefile; any CRS) or label raster."),
            literal_input("class_field", "Class field",
                          "Field of a labelset that holds the classes (codes or names); "
                          "not needed for a label raster.", default=""),
            path_input("baseline", "Baseline",
                       "A second classification of the same scene to compare with.",
                       required=False),
            literal_input("mapping", "Mapping",
                          'JSON object: classification class -> reference class (codes or '
                          'names), e.g. {"1": "forest"}.', default=""),
            literal_input("resample", "Resample",
                          "Resample a label raster or baseline on another grid onto the "
                          "classification's grid (nearest neighbour) instead of refusing.",
                          data_type="boolean", default=False),
            literal_input("match_by", "Match by",
                          "auto (by code for numeric references, else by name), code or name.",
                          default="auto", allowed_values=["auto", "code", "name"]),
            literal_input("all_touched", "All touched",
                          "Count every pixel a label polygon touches.", data_type="boolean",
                          default=False),
        ]  # fmt: skip

    def make_outputs(self) -> list[Any]:
        return [
            reference_output("report", "Accuracy report", [FORMATS.JSON]),
            reference_output("html", "PyCM HTML report", [Format("text/html", extension=".html")]),
            reference_output("plot", "Confusion matrix", [Format("image/png", extension=".png")]),
        ]

    def run(self, ctx: JobContext, request: Any, response: Any) -> None:
        classification = ctx.input_path(request, "classification", raster=True)
        reference = ctx.input_path(request, "reference")
        baseline = ctx.input_path(request, "baseline", raster=True, required=False)
        options = parse_options(
            class_field=ctx.literal(request, "class_field", "") or None,
            mapping=ctx.literal(request, "mapping", "") or None,
            resample=bool(ctx.literal(request, "resample", False)),
            match_by=ctx.literal(request, "match_by", "auto"),
            all_touched=bool(ctx.literal(request, "all_touched", False)),
        )
        assessment = assess_accuracy(
            classification, reference, options, baseline=baseline,
            progress=ctx.progress_callback(response, 0, 90),
        )  # fmt: skip
        ctx.progress(response, 92, "writing the report, PyCM's HTML and the plot")
        out = write_assessment(
            assessment,
            report=ctx.output_path("report.json"),
            html=ctx.output_path("report.html"),
            plot=ctx.output_path("confusion.png"),
        )
        ctx.set_output(response, "report", out.report)
        ctx.set_output(response, "html", out.html)
        ctx.set_output(response, "plot", out.plot)
        # The status ends with the one-sentence summary instead of a generic "done".
        response._update_status(WPS_STATUS.SUCCEEDED, assessment.summary(), 100)


PROCESSES = [AssessAccuracy]
