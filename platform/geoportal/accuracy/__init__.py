"""Accuracy assessment: a classification against reference labels, scored with PyCM.

The confusion matrix is built in windows with a numpy bincount (only where the
reference has labels, nodata excluded on both sides and counted), and PyCM gets
the finished matrix: its vector path is a pure-Python loop that would need
minutes and gigabytes for one scene. PyCM then supplies the statistics under
their usual names (``Overall ACC``, ``Kappa``, ``PPV``, ``TPR``, ``F1``…), its
HTML report, and :class:`pycm.Compare` to choose between two versions.

Modules: :mod:`~geoportal.accuracy.inputs` (open the classification and the
reference), :mod:`~geoportal.accuracy.confusion` (windowed joint histogram),
:mod:`~geoportal.accuracy.matching` (which classification class is which
reference class), :mod:`~geoportal.accuracy.report` (:class:`AccuracyReport`
and its JSON, HTML and PNG), :mod:`~geoportal.accuracy.compare` (two versions)
and :mod:`~geoportal.accuracy.assess` (the one call the CLI, WPS and notebooks use).
"""

from geoportal.accuracy.assess import (
    AccuracyAssessment,
    AccuracyOptions,
    assess_accuracy,
    write_assessment,
)
from geoportal.accuracy.compare import VersionComparison, compare_versions
from geoportal.accuracy.report import AccuracyReport

__all__ = [
    "AccuracyAssessment",
    "AccuracyOptions",
    "AccuracyReport",
    "VersionComparison",
    "assess_accuracy",
    "compare_versions",
    "write_assessment",
]
