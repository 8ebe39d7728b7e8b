"""Whole-scene inference: tiled, blended, pipelined, resumable, optionally on Dask.

* :mod:`~geoportal.inference.predict`: :func:`run_inference`, the one-scene pipeline.
* :mod:`~geoportal.inference.engine`: the threaded block engine (read → forward → blend → write).
* :mod:`~geoportal.inference.blend`: cos² blending weights across tile overlaps.
* :mod:`~geoportal.inference.blocks`, :mod:`~geoportal.inference.resume`: units of work
  and their part files (resumption, hand-over from distributed workers).
* :mod:`~geoportal.inference.writer`: class/probability COGs.
* :mod:`~geoportal.inference.distributed`: the same run on a Dask cluster.
* :mod:`~geoportal.inference.gallery`: RESFlow-style galleries of per-bucket models.
* :mod:`~geoportal.inference.stats`: the ``stats`` output.

This subpackage imports torch; ``import geoportal`` does not import it.
"""

from geoportal.inference.config import InferenceConfig
from geoportal.inference.predict import InferenceResult, prepare, run_inference
from geoportal.inference.stats import InferenceStats

__all__ = ["InferenceConfig", "InferenceResult", "InferenceStats", "prepare", "run_inference"]
