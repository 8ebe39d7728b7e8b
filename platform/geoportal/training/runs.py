"""A training run's folder: ``users/<name>/models/<run>/``.

It holds ``config.yaml`` (the full configuration, defaults spelled out),
``last.pt`` (weights plus optimiser, scheduler and RNG state, to resume),
``best.pt`` (best epoch by the monitored validation metric), ``metrics.json``
(one entry per epoch) and ``learning_curve.png``. Every file is written
atomically, so a run killed at any instant leaves only complete files, and
``last.pt`` is written last in an epoch: it is the commit point resume trusts.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from geoportal.atomic import atomic_path, atomic_write_text
from geoportal.errors import ConfigError, InvalidInputError
from geoportal.training.config import TrainingConfig, parse_config

CONFIG_FILE = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.json"
CURVE = "learning_curve.png"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name.

    Raises:
        InvalidInputError: it could leave the models folder or is empty.
    """
    if not _RUN_NAME.match(name or "") or ".." in name:
        raise InvalidInputError(
            f"run name {name!r} is not allowed: letters, digits and . _ - (no '..')", field="run"
        )
    return name


def default_run_name(architecture: str) -> str:
    return f"{architecture}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunFolder:
    """The files of one training run."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def last(self) -> Path:
        return self.folder / LAST

    @property
    def best(self) -> Path:
        return self.folder / BEST

    @property
    def metrics_path(self) -> Path:
        return self.folder / METRICS

    @property
    def curve_path(self) -> Path:
        return self.folder / CURVE

    def stored_config(self) -> TrainingConfig | None:
        if not self.config_path.exists():
            return None
        return parse_config(yaml.safe_load(self.config_path.read_text()) or {})

    def prepare(self, config: TrainingConfig, *, resume: bool) -> bool:
        """Create the folder and write the config; return whether a run is to be resumed.

        Raises:
            ConfigError: the folder holds a run with another configuration (resuming
                it under a changed configuration would mix two experiments).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        stored = self.stored_config()
        if stored is not None and self.last.exists():
            if not resume:
                raise ConfigError(
                    f"run '{self.name}' exists already; choose another run name", field="run"
                )
            if stored.model_dump(mode="json") != config.model_dump(mode="json"):
                raise ConfigError(
                    f"run '{self.name}' was started with another configuration; "
                    "resume it with its own config.yaml or choose another run name",
                    field="run",
                )
            return True
        atomic_write_text(self.config_path, config.to_yaml())
        return False

    def write_metrics(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.metrics_path, json.dumps(record, indent=1, allow_nan=False))

    def read_metrics(self) -> dict[str, Any] | None:
        if not self.metrics_path.exists():
            return None
        data: dict[str, Any] = json.loads(self.metrics_path.read_text())
        return data

    def plot_curve(self, history: list[dict[str, Any]]) -> None:
        """Loss and validation accuracy / mean F1 per epoch, as a PNG."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        epochs = [h["epoch"] for h in history]
        fig = Figure(figsize=(9, 3.6), dpi=100)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(epochs, [h["train"]["loss"] for h in history], "o-", label="training")
        val = [h for h in history if h.get("val")]
        if val:
            ax1.plot(
                [h["epoch"] for h in val], [h["val"]["loss"] for h in val], "o-", label="validation"
            )
        ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
        ax1.legend()
        ax2.plot(epochs, [h["train"]["accuracy"] for h in history], "o-", label="training accuracy")
        if val:
            ve = [h["epoch"] for h in val]
            ax2.plot(ve, [h["val"]["accuracy"] for h in val], "o-", label="validation accuracy")
            ax2.plot(ve, [h["val"]["mean_f1"] for h in val], "s--", label="validation mean F1")
        ax2.set(xlabel="epoch", ylim=(0, 1.02), title="Accuracy")
        ax2.legend(loc="lower right")
        for ax in (ax1, ax2):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        with atomic_path(self.curve_path) as tmp:
            fig.savefig(tmp, format="png")
