"""Experiment grids: one training configuration per combination, one Kubernetes Job each.

* :mod:`~geoportal.experiments.grid`: expand a grid over a base configuration;
* :mod:`~geoportal.experiments.jobs`: the typed :class:`JobTemplate` and the Job manifests;
* :mod:`~geoportal.experiments.cluster`: submit through the Kubernetes API, follow the
  Jobs, and pick the best run from the runs' ``metrics.json``.

The seed project generated Jobs with Jinja, submitted them with kubectl and deleted
them by hand; here the manifests are plain dictionaries built by a pure function
(tested without a cluster, like kubespawner's ``make_pod``), finished Jobs delete
themselves (``ttlSecondsAfterFinished``), and a retried pod resumes its run from
``last.pt`` instead of starting over.
"""

from geoportal.experiments.grid import Experiment, expand_grid, load_grid, prepare_experiment
from geoportal.experiments.jobs import JobTemplate, render_job

__all__ = [
    "Experiment",
    "JobTemplate",
    "expand_grid",
    "load_grid",
    "prepare_experiment",
    "render_job",
]
