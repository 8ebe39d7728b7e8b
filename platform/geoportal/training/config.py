"""The typed training configuration: one YAML/JSON file says how to train.

Every key has a default except what the data tells: the bands and the classes
come from the samples, so ``{"epochs": 5}`` is a complete configuration. The
default architecture follows the samples' mode (``patch_cnn`` for class
folders, ``unet`` for image/mask tiles). Unknown keys and wrong types are
refused with a :class:`~geoportal.errors.ConfigError` naming the key, because a
misspelt ``learning_rate`` silently ignored costs a day of GPU time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geoportal.errors import ConfigError
from geoportal.settings import Device

DEFAULT_ARCHITECTURE = {"patch": "patch_cnn", "segmentation": "unet"}
MONITORS = ("val_loss", "val_accuracy", "val_mean_f1", "val_mean_iou")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    """Which network to train."""

    architecture: str | None = Field(
        None,
        description="Registered architecture: patch_cnn (patch samples), unet or fcn "
        "(segmentation samples). Empty picks the one that fits the samples' mode.",
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Arguments of the architecture, e.g. {width: 32, depth: 3} for patch_cnn, "
        "{base_channels: 16, depth: 3} for unet, {width: 16, dilations: [1, 2, 4]} for fcn. "
        "in_channels, num_classes and (patch_cnn) patch_size come from the samples.",
    )


class OptimizerSection(_Section):
    """The optimiser by name with its arguments."""

    name: Literal["sgd", "adam", "adamw"] = Field("adamw", description="sgd, adam or adamw.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (the peak rate under onecycle).")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty (decoupled for adamw).")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (sgd only).")


class ScheduleSection(_Section):
    """How the learning rate changes over the epochs."""

    name: Literal["none", "step", "cosine", "onecycle"] = Field(
        "cosine",
        description="none: constant; step: times gamma every step_size epochs; cosine: "
        "cosine annealing to min_lr over the run; onecycle: warm-up then annealing, per batch.",
    )
    step_size: int = Field(10, ge=1, description="Epochs between decays (step).")
    gamma: float = Field(0.1, gt=0, le=1, description="Decay factor (step).")
    min_lr: float = Field(0.0, ge=0, description="Final learning rate (cosine).")
    pct_start: float = Field(0.3, gt=0, lt=1, description="Warm-up share of the run (onecycle).")


class LossSection(_Section):
    """Cross-entropy, optionally weighted per class."""

    name: Literal["cross_entropy"] = Field("cross_entropy", description="The loss function.")
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None,
        description="None: unweighted; 'balanced': n_samples / (n_classes * count) from the "
        "training set; or one weight per class in the samples' class order.",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the targets.")


class DataSection(_Section):
    """Where the samples come from and how they are fed."""

    samples: str | None = Field(
        None,
        description="A sample-set folder or a balanced selection.csv (storage path). "
        "The CLI's --samples and the WPS input 'samples' override it.",
    )
    validation: str | None = Field(
        None,
        description="A separate validation sample set or selection.csv; "
        "when empty, val_fraction of the training samples is held out.",
    )
    val_fraction: float = Field(
        0.2, ge=0, lt=1, description="Share held out for validation, stratified by class."
    )
    augment: bool = Field(True, description="Random flips and 90° rotations of training samples.")
    workers: int = Field(0, ge=0, description="Data-loader worker processes (0: main process).")


class TrainingConfig(_Section):
    """A complete training configuration (the file users write)."""

    model: ModelSection = Field(default_factory=ModelSection)
    num_classes: int | None = Field(
        None, ge=2, description="Expected number of classes; checked against the samples."
    )
    bands: int | None = Field(
        None, ge=1, description="Expected number of input bands; checked against the samples."
    )
    epochs: int = Field(10, ge=1, description="Epochs to train (a resumed run ends at the same).")
    batch_size: int = Field(32, ge=1, description="Samples per batch.")
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    loss: LossSection = Field(default_factory=LossSection)
    data: DataSection = Field(default_factory=DataSection)
    validate_while_training: bool = Field(
        True, description="Evaluate the validation set after every epoch (else only at the end)."
    )
    monitor: Literal["val_loss", "val_accuracy", "val_mean_f1", "val_mean_iou"] = Field(
        "val_mean_f1", description="Validation metric that picks best.pt."
    )
    seed: int = Field(0, description="Seeds weights, shuffling, augmentation and the split.")
    device: Device = Field(Device.auto, description="auto (CUDA when available), cpu or cuda.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="fp32, or mixed precision: bf16 (CUDA, and CPUs with native bf16) or fp16 "
        "(CUDA only, with gradient scaling). Unsupported choices fall back with a warning.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _architecture_shorthand(cls, value: Any) -> Any:
        # `model: unet` is accepted as shorthand for `model: {architecture: unet}`.
        return {"architecture": value} if isinstance(value, str) else value

    def to_yaml(self) -> str:
        """The configuration as YAML, every default spelled out."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _key(loc: tuple[Any, ...]) -> str:
    # Unions add their member types to the location (``literal['balanced']``,
    # ``list[float]``); the person wants the key they wrote.
    parts = [str(p) for p in loc if isinstance(p, str) and "[" not in p and "-" not in p]
    return ".".join(parts) or "(root)"


def _describe(error: ValidationError) -> tuple[str, str]:
    problems: list[str] = []
    for item in error.errors():
        key = _key(item["loc"])
        text = (
            f"unknown key '{key}'"
            if item["type"] == "extra_forbidden"
            else f"'{key}': {item['msg']}"
        )
        if text not in problems:
            problems.append(text)
    return "; ".join(problems), _key(error.errors()[0]["loc"])


def parse_config(data: dict[str, Any] | TrainingConfig | None) -> TrainingConfig:
    """Validate a mapping into a :class:`TrainingConfig`.

    Raises:
        ConfigError: a key is unknown or has the wrong type (the message names it).
    """
    if isinstance(data, TrainingConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a training configuration is a mapping of keys, not {type(data).__name__}",
            field="config",
        )
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        message, first = _describe(exc)
        raise ConfigError(f"invalid training configuration: {message}", field=first) from None


def config_from_text(text: str) -> TrainingConfig:
    """Parse YAML or JSON text (JSON is YAML) into a configuration."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"the training configuration is not valid YAML/JSON: {exc}", field="config"
        ) from None
    return parse_config(data)


def load_config(path: str | os.PathLike[str]) -> TrainingConfig:
    """Read a configuration file (``.yaml``, ``.yml`` or ``.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration {path}: {exc.strerror}", field="config"
        ) from None
    if path.suffix == ".json":
        try:
            return parse_config(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name} is not valid JSON: {exc}", field="config") from None
    return config_from_text(text)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested mapping (used by experiment grids and overrides)."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "model":
            child = {"architecture": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def config_reference() -> str:
    """The configuration reference as a Markdown table, from the fields' descriptions.

    ``docs/training.md`` embeds this table; a test keeps the two identical, so
    the reference cannot drift from the model.
    """
    rows = ["| key | default | description |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            default = info.get_default(call_default_factory=True)
            shown = json.dumps(default.value if hasattr(default, "value") else default)
            text = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | `{shown}` | {text} |")

    walk(TrainingConfig, "")
    return "\n".join(rows)
