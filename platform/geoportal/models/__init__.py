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
