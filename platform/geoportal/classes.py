"""Land-cover classes: a code, a name and a colour, travelling together.

Codes are what rasters hold (1..254; 0 means "no label" in label rasters and
255 is the class rasters' nodata), names are what people and reports use, and
colours are what maps and colour tables show. The same :class:`ClassInfo`
list goes from labels into samples, from samples into a model checkpoint, and
from the model into the classification raster's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from geoportal.errors import InvalidInputError

NO_LABEL = 0
CLASS_NODATA = 255

# A qualitative palette that stays distinguishable on satellite imagery.
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
    "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8",
    "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075", "#808080",
)  # fmt: skip


@dataclass(frozen=True)
class ClassInfo:
    """One class: raster ``code``, human ``name`` and display ``color`` (``#rrggbb``)."""

    code: int
    name: str
    color: str

    def __post_init__(self) -> None:
        if not 1 <= int(self.code) <= 254:
            raise InvalidInputError(
                f"class code {self.code} for {self.name!r} must be within 1..254 "
                "(0 is 'no label', 255 is nodata)",
                field="classes",
            )
        if not (isinstance(self.color, str) and len(self.color) == 7 and self.color[0] == "#"):
            raise InvalidInputError(
                f"colour {self.color!r} of class {self.name!r} must be '#rrggbb'", field="classes"
            )

    @property
    def rgb(self) -> tuple[int, int, int]:
        c = self.color
        return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def default_color(code: int) -> str:
    return PALETTE[(int(code) - 1) % len(PALETTE)]


def make_classes(
    codes_to_names: dict[int, str], colors: dict[int, str] | None = None
) -> list[ClassInfo]:
    """Build a sorted class list, filling missing colours from :data:`PALETTE`."""
    colors = colors or {}
    return [
        ClassInfo(int(code), str(name), colors.get(int(code), default_color(int(code))))
        for code, name in sorted(codes_to_names.items())
    ]


def classes_to_json(classes: Sequence[ClassInfo]) -> list[dict[str, object]]:
    return [asdict(c) for c in classes]


def classes_from_json(data: Iterable[dict[str, object]] | str) -> list[ClassInfo]:
    items: Iterable[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data
    return [ClassInfo(int(d["code"]), str(d["name"]), str(d["color"])) for d in items]


def by_name(classes: Sequence[ClassInfo]) -> dict[str, ClassInfo]:
    return {c.name: c for c in classes}


def by_code(classes: Sequence[ClassInfo]) -> dict[int, ClassInfo]:
    return {c.code: c for c in classes}
