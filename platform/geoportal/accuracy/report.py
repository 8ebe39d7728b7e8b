"""The accuracy report: PyCM statistics from a finished confusion matrix, and its files.

:class:`AccuracyReport` holds the K x K matrix (rows: reference, columns:
classification), the class names and colours, and the pixel counts. PyCM gets
the matrix (``ConfusionMatrix(matrix={...})``, about a millisecond) and supplies
every statistic under its own name. The JSON report keeps PyCM's layout
(``{"overall": {"Overall ACC": …}, "class": {"PPV": {"forest": …}}}``) with
values made JSON-safe: PyCM writes ``"None"`` or NaN for undefined statistics
(precision of a class never predicted) and those become ``null``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from geoportal.atomic import atomic_path
from geoportal.errors import InvalidInputError

HEADLINE_OVERALL = ("Overall ACC", "Kappa", "Overall MCC", "F1 Macro", "PPV Macro", "TPR Macro")
HEADLINE_CLASS = ("PPV", "TPR", "F1", "ACC")


def sanitize(value: Any) -> Any:
    """A JSON-safe copy of a PyCM value: ``"None"``, NaN and infinities become ``None``."""
    if value is None or (isinstance(value, str) and value == "None"):
        return None
    if isinstance(value, dict):
        return {str(k): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return sanitize(value.tolist())
    return str(value)


@dataclass
class AccuracyReport:
    """A confusion matrix with its classes, pixel counts and PyCM's statistics.

    Attributes:
        classes: matrix class names (rows and columns, same order).
        colors: ``#rrggbb`` per class.
        matrix: int64 (K, K); ``matrix[i, j]`` pixels of reference class i
            classified as class j.
        pixels: ``labelled`` (pixels with a reference label on the grid),
            ``assessed`` (those with a prediction), ``excluded_nodata`` (labelled
            but classification nodata), ``reference_nodata`` (label-raster nodata,
            not labels), ``grid`` (pixels of the classification).
        excluded_by_class: ``excluded_nodata`` per reference class.
        matching: how classes were matched (rule, pairs, warnings).
        inputs: what was assessed (file names, class field, reference kind).
    """

    classes: list[str]
    colors: list[str]
    matrix: np.ndarray
    pixels: dict[str, int]
    excluded_by_class: dict[str, int] = field(default_factory=dict)
    matching: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_matrix(
        cls, classes: Sequence[str], colors: Sequence[str], matrix: np.ndarray, **extra: Any
    ) -> AccuracyReport:
        """Build a report, dropping classes that occur on neither side.

        PyCM needs two classes at least; a single occurring class keeps the next
        known class as an empty row and column.

        Raises:
            InvalidInputError: fewer than two classes are known at all.
        """
        matrix = np.asarray(matrix, dtype=np.int64)
        used = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
        keep = [int(i) for i in np.flatnonzero(used)]
        for i in range(len(classes)):
            if len(keep) >= 2:
                break
            if i not in keep:
                keep.append(i)
        keep.sort()
        if len(keep) < 2:
            raise InvalidInputError(
                "accuracy statistics need at least two classes, but only "
                f"{list(classes)} are known; give labels of more than one class",
                field="reference",
            )
        sub = matrix[np.ix_(keep, keep)]
        return cls(
            classes=[str(classes[i]) for i in keep],
            colors=[colors[i] for i in keep],
            matrix=sub,
            **extra,
        )

    @cached_property
    def cm(self) -> Any:
        """PyCM's ConfusionMatrix, created from the matrix (never from pixel vectors)."""
        from pycm import ConfusionMatrix

        table = {
            a: {p: int(self.matrix[i, j]) for j, p in enumerate(self.classes)}
            for i, a in enumerate(self.classes)
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return ConfusionMatrix(matrix=table, classes=list(self.classes))

    @cached_property
    def overall(self) -> dict[str, Any]:
        return sanitize(self.cm.overall_stat)

    @cached_property
    def per_class(self) -> dict[str, dict[str, Any]]:
        return sanitize(self.cm.class_stat)

    @property
    def accuracy(self) -> float:
        return float(self.overall["Overall ACC"])

    @property
    def kappa(self) -> float | None:
        value = self.overall.get("Kappa")
        return float(value) if value is not None else None

    @property
    def assessed(self) -> int:
        return int(self.matrix.sum())

    def headline(self) -> str:
        """``Overall ACC 0.912 (Kappa 0.87) on 2,872 labelled pixels`` (+ exclusions)."""
        kappa = f"{self.kappa:.2f}" if self.kappa is not None else "n/a"
        text = (
            f"Overall ACC {self.accuracy:.3f} (Kappa {kappa}) on {self.assessed:,} labelled pixels"
        )
        excluded = self.pixels.get("excluded_nodata", 0)
        if excluded:
            text += f" ({excluded:,} more excluded as nodata)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: PyCM's statistics, the matrix and the pixel accounting."""
        return {
            "overall": self.overall,
            "class": self.per_class,
            "matrix": {
                "classes": list(self.classes),
                "colors": list(self.colors),
                "rows": "reference",
                "columns": "classification",
                "counts": self.matrix.tolist(),
            },
            "pixels": dict(self.pixels),
            "excluded_by_class": dict(self.excluded_by_class),
            "matching": sanitize(self.matching),
            "inputs": sanitize(self.inputs),
        }


def save_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as strict JSON (no NaN) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(sanitize(data), indent=2, allow_nan=False) + "\n")
    return Path(path)


def write_html(report: AccuracyReport, target: Path) -> None:
    """PyCM's HTML report at ``target`` (PyCM appends ``.html`` to the name it is given).

    Raises:
        OSError: PyCM reported a failure (it returns a status instead of raising).
    """
    if target.suffix != ".html":
        raise ValueError("the HTML report's name must end in .html")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        status = report.cm.save_html(str(target)[: -len(".html")], address=False)
    if not status.get("Status"):
        raise OSError(f"PyCM could not write the HTML report: {status.get('Message')}")


def save_html(report: AccuracyReport, path: str | os.PathLike[str]) -> Path:
    """Write PyCM's HTML report to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write_html(report, tmp)
    return Path(path)


def draw_matrices(reports: Sequence[AccuracyReport], titles: Sequence[str]) -> Any:
    """A matplotlib Figure with one confusion matrix per report (Agg canvas, no pyplot).

    Cells show counts; their shade is the share of the reference class (row), so
    a good classification is a dark diagonal whatever the class sizes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = max(len(r.classes) for r in reports)
    side = max(4.5, 0.75 * k + 2.5)
    fig = Figure(figsize=(side * len(reports), side), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(reports), squeeze=False)[0]
    for ax, report, title in zip(axes, reports, titles, strict=True):
        m = report.matrix.astype(float)
        rows = m.sum(axis=1, keepdims=True)
        share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        n = len(report.classes)
        for i in range(n):
            for j in range(n):
                count = int(report.matrix[i, j])
                if count:
                    ax.text(
                        j,
                        i,
                        f"{count:,}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
        ax.set_xticks(range(n), report.classes, rotation=45, ha="right")
        ax.set_yticks(range(n), report.classes)
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for label, color in zip(labels, report.colors, strict=True):
                label.set_bbox({"facecolor": color, "alpha": 0.35, "edgecolor": "none", "pad": 1.5})
        ax.set_xlabel("classification")
        ax.set_ylabel("reference")
        ax.set_title(f"{title}\n{report.headline().split(' on ')[0]}", fontsize=10)
    return fig


def save_plot(
    reports: Sequence[AccuracyReport], path: str | os.PathLike[str], titles: Sequence[str]
) -> Path:
    """Write the confusion-matrix PNG atomically."""
    fig = draw_matrices(reports, titles)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)
