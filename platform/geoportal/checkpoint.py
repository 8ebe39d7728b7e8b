"""Model checkpoints: the weights plus everything inference needs to use them.

A checkpoint is one ``.pt`` file holding ``{"info": ModelInfo as dict,
"state_dict": …}`` and, for resumable training, optimiser and scheduler state.
:class:`ModelInfo` records the architecture and its arguments, the bands and
their normalisation, the classes with names and colours, and the patch or tile
size, so that ``run-inference`` needs nothing but the file and a scene.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geoportal.atomic import atomic_write_bytes
from geoportal.classes import ClassInfo
from geoportal.errors import InvalidInputError, StorageNotFoundError
from geoportal.samples import ClassModel, Normalisation

CHECKPOINT_VERSION = 1


class ModelInfo(BaseModel):
    """What a trained model is and how to feed it."""

    model_config = ConfigDict(extra="forbid")
    version: int = CHECKPOINT_VERSION
    architecture: str
    arch_args: dict[str, Any] = Field(default_factory=dict)
    kind: Literal["patch", "segmentation"]
    bands: list[str]
    normalisation: Normalisation
    classes: list[ClassModel] = Field(description="output index i predicts classes[i]")
    patch_size: int = Field(description="patch size (patch models) or training tile size")
    epoch: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_infos(self) -> list[ClassInfo]:
        return [c.info() for c in self.classes]


def save_checkpoint(
    path: str | os.PathLike[str], model: Any, info: ModelInfo, **state: Any
) -> Path:
    """Write a checkpoint atomically (``state`` adds optimiser state and the like)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"info": info.model_dump(), "state_dict": model.state_dict(), **state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dictionary, with ``info`` parsed into :class:`ModelInfo`."""
    import torch

    path = Path(path)
    if not path.exists():
        raise StorageNotFoundError(f"model {path} does not exist", field="model")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=False)
        raw["info"] = ModelInfo.model_validate(raw["info"])
    except Exception as exc:
        raise InvalidInputError(
            f"{path.name} is not a geoportal model checkpoint ({exc})", field="model"
        ) from None
    return raw


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, ModelInfo]:
    """Build the network of a checkpoint, load its weights, and put it in eval mode."""
    from geoportal.models import build_model

    raw = read_checkpoint(path)
    info: ModelInfo = raw["info"]
    model = build_model(info.architecture, info.in_channels, info.num_classes, **info.arch_args)
    model.load_state_dict(raw["state_dict"])
    return model.to(device).eval(), info
