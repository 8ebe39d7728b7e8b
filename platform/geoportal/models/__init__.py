"""Model architectures in plain torch, registered by name.

``build_model(name, in_channels, num_classes, **kwargs)`` is how training,
inference and checkpoints create a network; a configuration names the
architecture and its arguments. Architectures register themselves with
:func:`register` when their module is imported (see the imports at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geoportal.errors import InvalidInputError

ARCHITECTURES: dict[str, Callable[..., Any]] = {}
"""name → factory(in_channels, num_classes, **kwargs) -> torch.nn.Module"""

KINDS: dict[str, str] = {}
"""name → "patch" (one class per patch) or "segmentation" (a class per pixel)."""


def register(name: str, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        ARCHITECTURES[name] = factory
        KINDS[name] = kind
        return factory

    return decorate


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> Any:
    """Create the architecture ``name``.

    Raises:
        InvalidInputError: the name is unknown (the message lists the known ones).
    """
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise InvalidInputError(
            f"unknown architecture '{name}'; choose one of: {known}", field="model.architecture"
        )
    try:
        return ARCHITECTURES[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise InvalidInputError(
            f"arguments of architecture '{name}' are wrong: {exc}", field="model.args"
        ) from None


# Importing the architecture modules registers them; they import torch, so only
# code that builds a model (training, inference, checkpoints) pays for it.
def _register_builtin() -> None:
    import os

    import torch

    from geoportal.models import fcn, patch_cnn, unet  # noqa: F401

    # A process forked after torch ran a parallel (OpenMP) op hangs at its next
    # parallel op: GNU OpenMP is not fork-safe. PyWPS forks async jobs from a server
    # that may have trained or inferred before, so forked children compute on one
    # thread (what torch's own DataLoader workers do).
    os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))


_register_builtin()
