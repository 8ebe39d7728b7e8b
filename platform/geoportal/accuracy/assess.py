"""The one call behind the CLI, the WPS process and the notebooks: assess, then write.

:func:`assess_accuracy` checks every input before the pass over the pixels
(grids, overlap, class sets when both sides declare them), counts in windows,
matches classes, and returns an :class:`AccuracyAssessment`; it writes nothing.
:func:`write_assessment` then writes the JSON report, PyCM's HTML report and the
matrix PNG, all under temporary names first, renamed only once all three exist.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geoportal.accuracy.compare import VersionComparison, compare_versions
from geoportal.accuracy.confusion import JointHistogram, joint_histogram
from geoportal.accuracy.inputs import (
    ClassificationSource,
    Reference,
    VectorReference,
    open_classification,
    open_reference,
)
from geoportal.accuracy.matching import SideClasses, match_classes, require_common
from geoportal.accuracy.report import AccuracyReport, save_json, save_plot, write_html
from geoportal.atomic import atomic_path
from geoportal.classes import CLASS_NODATA
from geoportal.errors import InvalidInputError

Progress = Callable[[float, str], None]
NAMES = ("new version", "baseline")


class AccuracyOptions(BaseModel):
    """How to assess a classification against a reference."""

    model_config = ConfigDict(extra="forbid")

    class_field: str | None = Field(
        None, description="Field of a vector reference that holds the classes (codes or names)."
    )
    mapping: dict[str, str | int] | None = Field(
        None,
        description="Classification class (code or name) -> reference class (code or name), "
        "for when the two sides use different codes or names. JSON text is accepted.",
    )
    resample: bool = Field(
        False,
        description="Resample a label raster or baseline on another grid onto the "
        "classification's grid (nearest neighbour) instead of refusing.",
    )
    match_by: Literal["auto", "code", "name"] = Field(
        "auto",
        description="auto: by code when the reference is numeric (numeric class field or "
        "label raster), else by name.",
    )
    all_touched: bool = Field(
        False, description="Burn every pixel a label polygon touches, not only covered centres."
    )
    window_pixels: int = Field(
        4_000_000, ge=65_536, description="About how many pixels one window (strip) holds."
    )
    workers: int = Field(2, ge=1, le=32, description="Threads reading and counting windows.")

    @field_validator("mapping", mode="before")
    @classmethod
    def _parse_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"mapping is not valid JSON ({exc.msg})") from None
        if isinstance(value, Mapping):
            return {str(k): v for k, v in value.items()}
        return value


def parse_options(**values: Any) -> AccuracyOptions:
    """Build :class:`AccuracyOptions`, turning validation errors into ``InvalidInputError``."""
    try:
        return AccuracyOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        item = exc.errors()[0]
        name = ".".join(str(p) for p in item["loc"]) or "options"
        message = item["msg"].removeprefix("Value error, ")
        raise InvalidInputError(f"{name}: {message}", field=name) from None


@dataclass
class AccuracyAssessment:
    """The report of a classification, and of its baseline with the comparison."""

    report: AccuracyReport
    baseline: AccuracyReport | None = None
    comparison: VersionComparison | None = None

    def summary(self) -> str:
        """One sentence: accuracy, Kappa, pixels; with a baseline, which is better by how much."""
        text = self.report.headline()
        if self.baseline is not None and self.comparison is not None:
            text += f"; baseline {self.baseline.accuracy:.3f}: {self.comparison.sentence()}"
        return text

    def to_dict(self) -> dict[str, Any]:
        data = self.report.to_dict()
        data["summary"] = self.summary()
        if self.baseline is not None and self.comparison is not None:
            base = self.baseline.to_dict()
            data["baseline"] = {
                k: base[k] for k in ("overall", "class", "matrix", "pixels", "excluded_by_class")
            }
            data["comparison"] = self.comparison.to_dict()
        return data


def _side(source: ClassificationSource, present: np.ndarray) -> SideClasses:
    return SideClasses.build(source.classes, present, source.colors)


def _present_codes(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(hist[1:, :].sum(axis=1)) + 1
    cols = np.flatnonzero(hist[1:, :CLASS_NODATA].sum(axis=0))
    return rows, cols


def _reference_side(reference: Reference, present: np.ndarray) -> SideClasses:
    colors = getattr(reference, "colors", {}) or {c.code: c.color for c in reference.classes}
    return SideClasses.build(reference.classes, present, colors)


def _no_labels_error(reference: Reference) -> InvalidInputError:
    name = Path(reference.path).name
    if isinstance(reference, VectorReference):
        return InvalidInputError(
            f"reference {name}: none of its {reference.features_total} labels covers a pixel "
            "centre of the classification; for small polygons or lines set all_touched=true",
            field="reference",
        )
    return InvalidInputError(
        f"reference {name} holds no labelled pixel over the classification (only 0 or nodata); "
        "give a label raster with class codes there",
        field="reference",
    )


def _build_report(
    version: int,
    hist: JointHistogram,
    source: ClassificationSource,
    reference: Reference,
    options: AccuracyOptions,
    inputs: dict[str, Any],
) -> tuple[AccuracyReport, Any]:
    counts = hist.counts[version]
    rows, cols = _present_codes(counts)
    pred_side = _side(source, cols)
    ref_side = _reference_side(reference, rows)
    match = match_classes(
        pred_side,
        ref_side,
        reference_numeric=reference.numeric,
        mapping=options.mapping,
        match_by=options.match_by,
        reference_field=reference.class_field,
    )
    require_common(match, pred_side, ref_side)
    matrix = match.fold(counts)
    excluded = int(counts[1:, CLASS_NODATA].sum())
    if matrix.sum() == 0:
        raise InvalidInputError(
            f"{source.field_name} {Path(source.path).name} is nodata on all "
            f"{hist.labelled:,} labelled pixels; check that it covers the labelled area",
            field=source.field_name,
        )
    pixels = {
        "grid": hist.pixels,
        "labelled": hist.labelled,
        "assessed": int(matrix.sum()),
        "excluded_nodata": excluded,
        "reference_nodata": hist.reference_nodata,
    }
    matching = {
        "by": match.by,
        "mapping": options.mapping,
        "pairs": {str(code): name for code, name in match.pairs.items() if code in set(cols)},
        "warnings": match.warnings,
    }
    report = AccuracyReport.from_matrix(
        match.names,
        match.colors,
        matrix,
        pixels=pixels,
        excluded_by_class=match.excluded_by_class(counts),
        matching=matching,
        inputs=dict(inputs, classification=Path(source.path).name),
    )
    return report, match


def assess_accuracy(
    classification: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    options: AccuracyOptions | None = None,
    *,
    baseline: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    **option_values: Any,
) -> AccuracyAssessment:
    """Score a classification raster against reference labels (and a baseline against both).

    Args:
        classification: a classification raster (uint8 codes, nodata 255, classes in
            its ``GEOPORTAL_CLASSES`` tag).
        reference: a labelset (polygons or points, any CRS) or a label raster.
        options: :class:`AccuracyOptions`; or give its fields as keywords.
        baseline: a second classification of the same scene to compare with.
        progress: ``progress(fraction, message)``.

    Raises:
        GeoportalError: inputs that cannot be assessed (no overlap, empty reference,
            disjoint classes without mapping, other grids without ``resample``).
    """
    options = options or parse_options(**option_values)
    step = progress or (lambda fraction, message: None)
    step(0.0, "checking the inputs")
    source = open_classification(classification)
    sources = [source]
    if baseline is not None:
        base = open_classification(baseline, field_name="baseline")
        if not base.grid.same_as(source.grid) and not options.resample:
            raise InvalidInputError(
                f"baseline lies on another grid ({base.grid.describe()}) than the classification "
                f"({source.grid.describe()}); pass resample=true (CLI: --resample) to resample "
                "it (nearest neighbour), or give a baseline of the same grid",
                field="baseline",
            )
        sources.append(base)
    ref = open_reference(
        reference,
        source.grid,
        class_field=options.class_field,
        resample=options.resample,
        all_touched=options.all_touched,
    )
    for src in sources:
        if src.classes and ref.classes:
            # Both sides declare their classes: refuse disjoint sets before the long pass.
            side, ref_side = _side(src, np.array([], int)), _reference_side(ref, np.array([], int))
            require_common(
                match_classes(
                    side,
                    ref_side,
                    reference_numeric=ref.numeric,
                    mapping=options.mapping,
                    match_by=options.match_by,
                    reference_field=ref.class_field,
                ),
                side,
                ref_side,
            )

    hist = joint_histogram(
        sources,
        ref,
        resample=options.resample,
        window_pixels=options.window_pixels,
        workers=options.workers,
        progress=lambda f, m: step(0.05 + 0.85 * f, m),
    )
    if hist.labelled == 0:
        raise _no_labels_error(ref)
    step(0.92, "computing statistics with PyCM")
    inputs = {
        "reference": Path(ref.path).name,
        "reference_kind": ref.kind,
        "class_field": ref.class_field,
        "crs": source.grid.crs.to_string(),
    }
    if isinstance(ref, VectorReference):
        inputs["features"] = ref.features_total
        inputs["features_outside"] = ref.features_outside
    report, match = _build_report(0, hist, source, ref, options, inputs)
    assessment = AccuracyAssessment(report)
    if len(sources) == 2:
        base_report, base_match = _build_report(1, hist, sources[1], ref, options, inputs)
        assert hist.common is not None
        common_a = AccuracyReport.from_matrix(
            match.names, match.colors, match.fold(hist.common[0]), pixels={}
        )
        common_b = AccuracyReport.from_matrix(
            base_match.names, base_match.colors, base_match.fold(hist.common[1]), pixels={}
        )
        assessment.baseline = base_report
        assessment.comparison = compare_versions(common_a, common_b, NAMES)
    report.overall  # noqa: B018 - compute the statistics inside the progress span
    step(1.0, assessment.summary())
    return assessment


@dataclass(frozen=True)
class OutputPaths:
    """Where :func:`write_assessment` put the three outputs."""

    report: Path
    html: Path
    plot: Path


def write_assessment(
    assessment: AccuracyAssessment,
    folder: str | os.PathLike[str] | None = None,
    *,
    report: str | os.PathLike[str] | None = None,
    html: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
) -> OutputPaths:
    """Write ``report.json``, ``report.html`` and ``confusion.png`` (or the given paths).

    All three are written under temporary names and renamed only when all exist,
    so a failure leaves none of them under its final name.
    """
    base = Path(folder) if folder is not None else None
    if base is None and None in (report, html, plot):
        raise ValueError("give a folder or all three output paths")
    paths = OutputPaths(
        Path(report) if report else base / "report.json",  # type: ignore[operator]
        Path(html) if html else base / "report.html",  # type: ignore[operator]
        Path(plot) if plot else base / "confusion.png",  # type: ignore[operator]
    )
    reports = [assessment.report]
    titles = ["classification"]
    if assessment.baseline is not None:
        reports.append(assessment.baseline)
        titles = ["new version", "baseline"]
    with contextlib.ExitStack() as stack:
        tmp_json = stack.enter_context(atomic_path(paths.report))
        tmp_html = stack.enter_context(atomic_path(paths.html))
        tmp_plot = stack.enter_context(atomic_path(paths.plot))
        save_json(assessment.to_dict(), tmp_json)
        write_html(assessment.report, tmp_html)
        save_plot(reports, tmp_plot, titles)
    return paths
