"""Two versions of a classification, scored on the same pixels, compared with PyCM.

PyCM's :class:`~pycm.Compare` ranks confusion matrices by benchmark scores
(overall and per class) and names a best one when both rankings agree; it needs
matrices over the same classes and the same population. So the two versions
are counted only where the reference has a label and *both* have a prediction,
and their matrices are aligned on one class list. When PyCM's rankings disagree
it names no best; the version with the higher Overall ACC is then called better
and the report says that PyCM was inconclusive. "By how much" is the difference
in Overall ACC in percentage points.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoportal.accuracy.report import AccuracyReport


def align(a: AccuracyReport, b: AccuracyReport) -> tuple[AccuracyReport, AccuracyReport]:
    """Both reports over the union of their classes (same order), for PyCM's Compare."""
    names = list(a.classes) + [c for c in b.classes if c not in a.classes]
    colors = dict(zip(b.classes, b.colors, strict=True)) | dict(
        zip(a.classes, a.colors, strict=True)
    )

    def widen(r: AccuracyReport) -> AccuracyReport:
        index = [names.index(c) for c in r.classes]
        m = np.zeros((len(names), len(names)), dtype=np.int64)
        m[np.ix_(index, index)] = r.matrix
        return AccuracyReport(
            classes=names, colors=[colors[c] for c in names], matrix=m, pixels=dict(r.pixels)
        )

    return widen(a), widen(b)


@dataclass
class VersionComparison:
    """The outcome of comparing a classification with its baseline.

    Attributes:
        names: (candidate, baseline) as they appear in the report.
        accuracy: Overall ACC of each version on the common pixels.
        kappa: Kappa of each version on the common pixels.
        pycm_scores: PyCM Compare's ``{"overall": …, "class": …}`` per version.
        pycm_best: the version PyCM names best, or None when its rankings disagree.
        better: the better version (None for a tie).
        points: how much better, in percentage points of Overall ACC (>= 0).
        decided_by: ``"PyCM Compare"`` or ``"Overall ACC"``.
        pixels: the common population (labelled, predicted by both).
    """

    names: tuple[str, str]
    accuracy: dict[str, float]
    kappa: dict[str, float | None]
    pycm_scores: dict[str, dict[str, float]]
    pycm_best: str | None
    better: str | None
    points: float
    decided_by: str
    pixels: int

    def sentence(self) -> str:
        """``the new version is better by 5.8 points`` (with how that was decided)."""
        if self.better is None:
            return "both versions score the same"
        other = self.names[1] if self.better == self.names[0] else self.names[0]
        diff = (self.accuracy[self.better] - self.accuracy[other]) * 100
        if diff >= 0:
            text = f"the {self.better} is better by {diff:.1f} points"
        else:
            text = (
                f"PyCM's Compare prefers the {self.better} although its Overall ACC is "
                f"{-diff:.1f} points lower"
            )
        if self.decided_by != "PyCM Compare":
            text += " (PyCM's Compare was inconclusive)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": list(self.names),
            "better": self.better,
            "by_points": round(self.points, 3),
            "decided_by": self.decided_by,
            "overall_acc": self.accuracy,
            "kappa": self.kappa,
            "pycm_scores": self.pycm_scores,
            "pycm_best": self.pycm_best,
            "common_pixels": self.pixels,
            "sentence": self.sentence(),
        }


def compare_versions(
    candidate: AccuracyReport,
    baseline: AccuracyReport,
    names: tuple[str, str] = ("new version", "baseline"),
) -> VersionComparison:
    """Compare two reports computed on the same pixels (same population).

    Raises:
        ValueError: the two matrices count different populations.
    """
    from pycm import Compare

    a, b = align(candidate, baseline)
    if a.assessed != b.assessed:
        raise ValueError(
            f"versions must be compared on the same pixels ({a.assessed} vs {b.assessed})"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = Compare({names[0]: a.cm, names[1]: b.cm})
    scores = {name: {k: float(v) for k, v in result.scores[name].items()} for name in names}
    accuracy = {names[0]: a.accuracy, names[1]: b.accuracy}
    kappa = {names[0]: a.kappa, names[1]: b.kappa}
    pycm_best = result.best_name if result.best_name in names else None
    if pycm_best is not None:
        better: str | None = pycm_best
        decided_by = "PyCM Compare"
    elif accuracy[names[0]] != accuracy[names[1]]:
        better = max(names, key=lambda n: accuracy[n])
        decided_by = "Overall ACC"
    else:
        better, decided_by = None, "Overall ACC"
    points = abs(accuracy[names[0]] - accuracy[names[1]]) * 100
    return VersionComparison(
        names=names,
        accuracy=accuracy,
        kappa=kappa,
        pycm_scores=scores,
        pycm_best=pycm_best,
        better=better,
        points=points,
        decided_by=decided_by,
        pixels=a.assessed,
    )
