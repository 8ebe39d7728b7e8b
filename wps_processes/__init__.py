"""The platform's WPS processes, discovered from ``wps_processes/wps_*.py``.

Each module defines subclasses of :class:`wps_processes.base.GeoportalProcess` and a
module-level ``PROCESSES`` list naming the ones to publish. A process appears in
GetCapabilities only once its module exists and imports; there is no hand-kept list
to forget. A module that fails to import is a bug: it is logged, and
:func:`processes` raises unless ``strict=False``, so a broken process never silently
disappears from the service.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Any

LOGGER = logging.getLogger("geoportal.wps")


def process_modules() -> list[str]:
    """Names of the ``wps_*`` modules of this package, sorted."""
    return sorted(
        f"{__name__}.{info.name}"
        for info in pkgutil.iter_modules(__path__)
        if info.name.startswith("wps_")
    )


def process_classes(strict: bool = True) -> list[type]:
    """The classes listed in the ``PROCESSES`` of every discovered module."""
    classes: list[type] = []
    for name in process_modules():
        try:
            module = importlib.import_module(name)
        except Exception:
            LOGGER.exception("WPS process module %s does not import", name)
            if strict:
                raise
            continue
        classes.extend(getattr(module, "PROCESSES", []))
    return classes


def processes(strict: bool = True) -> list[Any]:
    """New instances of every published process, sorted by identifier.

    Raises:
        ValueError: two processes share an identifier.
    """
    instances = [cls() for cls in process_classes(strict=strict)]
    seen: dict[str, str] = {}
    for proc in instances:
        if proc.identifier in seen:
            raise ValueError(
                f"WPS identifier {proc.identifier!r} is defined twice "
                f"({seen[proc.identifier]} and {type(proc).__module__})"
            )
        seen[proc.identifier] = type(proc).__module__
    return sorted(instances, key=lambda p: p.identifier)
