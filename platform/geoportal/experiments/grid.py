"""Expand a parameter grid over a base training configuration.

A grid maps dotted configuration keys to lists of values::

    model.architecture: [unet, fcn]
    optimizer.lr: [0.001, 0.0003]
    batch_size: [16, 32]

and yields the Cartesian product (here 8 combinations). Every combination is
validated as a :class:`~geoportal.training.config.TrainingConfig` before anything is
written, so a typo in the grid fails before a single Job starts.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoportal.atomic import atomic_write_text
from geoportal.errors import ConfigError, InvalidInputError
from geoportal.training.config import TrainingConfig, load_config, parse_config, set_dotted

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
GRID_FILE = "grid.yaml"
BASE_FILE = "base.yaml"
CONFIGS = "configs"
JOBS = "jobs"
SUMMARY = "summary.json"


def check_experiment_name(name: str) -> str:
    """Experiment names end up in Job names (DNS labels): lowercase, digits and '-'.

    Raises:
        InvalidInputError: the name is not such a label of at most 40 characters.
    """
    if not _NAME.match(name or ""):
        raise InvalidInputError(
            f"experiment name {name!r} must be lowercase letters, digits and '-', "
            "at most 40 characters, starting and ending with a letter or digit",
            field="name",
        )
    return name


def load_grid(source: str | os.PathLike[str] | dict[str, Any]) -> dict[str, list[Any]]:
    """Read a grid (a YAML/JSON file or a mapping) and check its shape.

    Raises:
        ConfigError: the grid is not a mapping of keys to non-empty lists.
    """
    if isinstance(source, dict):
        data: Any = source
    else:
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read grid {source}: {exc.strerror}", field="grid") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"grid {source} is not valid YAML: {exc}", field="grid") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            "a grid maps configuration keys to lists of values, e.g. {optimizer.lr: [0.001, 0.01]}",
            field="grid",
        )
    grid: dict[str, list[Any]] = {}
    for key, values in data.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"grid key '{key}' must list at least one value (got {values!r})",
                field=f"grid.{key}",
            )
        grid[str(key)] = values
    return grid


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:20] or "x"


def expand_grid(
    base: TrainingConfig | dict[str, Any], grid: dict[str, list[Any]]
) -> list[tuple[dict[str, Any], TrainingConfig]]:
    """Every combination of the grid applied to ``base``: (parameters, configuration).

    Raises:
        ConfigError: a combination is not a valid configuration (the field is
            prefixed with ``grid.`` and the message names the combination).
    """
    base_data = parse_config(base).model_dump(mode="json")
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        data = copy.deepcopy(base_data)
        for key, value in params.items():
            set_dotted(data, key, value)
        try:
            config = parse_config(data)
        except ConfigError as exc:
            raise ConfigError(
                f"grid combination {params} is invalid: {exc.message}", field=f"grid.{exc.field}"
            ) from None
        out.append((params, config))
    return out


@dataclass
class ExperimentRun:
    """One combination: its run name, parameters, configuration file and Job name."""

    run: str
    params: dict[str, Any]
    config_path: Path
    job_name: str
    job_path: Path | None = None


@dataclass
class Experiment:
    """A prepared experiment: its folder and runs."""

    name: str
    folder: Path
    runs: list[ExperimentRun] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "experiment": self.name,
            "runs": [
                {"run": r.run, "job": r.job_name, "params": r.params, "config": r.config_path.name}
                for r in self.runs
            ],
        }


def prepare_experiment(
    name: str,
    base: TrainingConfig | dict[str, Any] | str | os.PathLike[str],
    grid: dict[str, list[Any]] | str | os.PathLike[str],
    folder: str | os.PathLike[str],
) -> Experiment:
    """Validate every combination, then write ``configs/<run>.yaml`` per combination.

    Runs are named ``<name>-NNN`` in grid order; the parameters of each are in the
    experiment's ``summary.json`` (and later in the Jobs' annotations).
    """
    check_experiment_name(name)
    if isinstance(base, (str, os.PathLike)):
        base = load_config(base)
    base_config = parse_config(base)
    grid = load_grid(grid)
    combos = expand_grid(base_config, grid)
    if len(combos) > 999:
        raise InvalidInputError(
            f"the grid has {len(combos)} combinations; at most 999 per experiment", field="grid"
        )
    folder = Path(folder)
    experiment = Experiment(name, folder)
    atomic_write_text(folder / GRID_FILE, yaml.safe_dump(grid, sort_keys=False))
    atomic_write_text(folder / BASE_FILE, base_config.to_yaml())
    for i, (params, config) in enumerate(combos):
        run = f"{name}-{i:03d}"
        path = atomic_write_text(folder / CONFIGS / f"{run}.yaml", config.to_yaml())
        experiment.runs.append(ExperimentRun(run, params, path, f"train-{run}"))
    atomic_write_text(folder / SUMMARY, json.dumps(experiment.summary(), indent=1))
    return experiment


def describe(params: dict[str, Any]) -> str:
    """A short human label of a combination (``lr=0.001 arch=unet``)."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={_slug(v)}" for k, v in params.items())
