"""Config-driven training in plain torch.

* :mod:`~geoportal.training.config`: the typed :class:`TrainingConfig` (no torch);
* :mod:`~geoportal.training.data`: sample sets and selections as batched datasets;
* :mod:`~geoportal.training.loop`: :func:`train`, resumable from ``last.pt``;
* :mod:`~geoportal.training.metrics`: accuracy, per-class F1 and IoU;
* :mod:`~geoportal.training.runs`: the run folder and its files.

``train`` is imported on first use, so reading or validating a configuration
(experiment grids, the WPS input check) does not pay for importing torch.
"""

from typing import Any

from geoportal.training.config import TrainingConfig, config_from_text, load_config, parse_config

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "config_from_text",
    "load_config",
    "parse_config",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainingResult"):
        from geoportal.training import loop

        return getattr(loop, name)
    raise AttributeError(name)
