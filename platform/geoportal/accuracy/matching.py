"""Which classification class is which reference class.

The rule: by code when both sides are numeric (the reference's class field
holds numbers, or the reference is a label raster), by name otherwise (names
travel in the classification raster's ``GEOPORTAL_CLASSES`` tag). An optional
``mapping`` overrides the rule for the classes it lists: keys are classification
codes or names, values reference codes or names; several classification classes
may map to one reference class (merging). A classification class that matches
nothing keeps its own column: predicting a class the reference does not know is
an error the matrix should show.

Matching works on the 256 possible codes of each side, so it turns into two
lookup tables that fold the 256 x 256 joint histogram into the K x K matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from geoportal.classes import CLASS_NODATA, ClassInfo, default_color
from geoportal.errors import InvalidInputError

MatchBy = Literal["auto", "code", "name"]


@dataclass(frozen=True)
class SideClasses:
    """The classes one side knows: ``code -> (name, colour)`` and whether names were declared."""

    classes: dict[int, tuple[str, str]]
    named: bool

    @classmethod
    def build(
        cls, declared: Sequence[ClassInfo], present: Iterable[int], colors: Mapping[int, str]
    ) -> SideClasses:
        table = {c.code: (c.name, c.color) for c in declared}
        for code in sorted(set(int(c) for c in present) - set(table)):
            table[code] = (f"class {code}", colors.get(code, default_color(max(code, 1))))
        return cls(dict(sorted(table.items())), named=bool(declared))

    def names(self) -> str:
        return ", ".join(f"{code} {name}" for code, (name, _) in self.classes.items()) or "none"


@dataclass
class ClassMatch:
    """The matrix classes and how each side's codes land in them.

    Attributes:
        names: the matrix classes, reference classes first (by code), then
            classification-only classes.
        colors: a colour per matrix class.
        reference_codes: the reference code of each matrix class (None if it has none).
        ref_index: int array (256): matrix index of each reference code, -1 for none.
        pred_index: int array (256): matrix index of each classification code, -1 for nodata.
        by: ``code``, ``name`` (the rule used; a mapping may override single classes).
        pairs: classification code -> matrix class name, for the report.
        warnings: suspicious matches (same code, different names).
        matched: how many reference classes some classification class maps to.
    """

    names: list[str]
    colors: list[str]
    reference_codes: list[int | None]
    ref_index: np.ndarray
    pred_index: np.ndarray
    by: str
    pairs: dict[int, str]
    warnings: list[str] = field(default_factory=list)
    matched: int = 0

    def fold(self, hist: np.ndarray) -> np.ndarray:
        """Fold a 256 x 256 (reference, classification) histogram into the K x K matrix."""
        k = len(self.names)
        matrix = np.zeros((k, k), dtype=np.int64)
        rows = np.flatnonzero(self.ref_index >= 0)
        cols = np.flatnonzero(self.pred_index >= 0)
        sub = hist[np.ix_(rows, cols)]
        np.add.at(matrix, (self.ref_index[rows][:, None], self.pred_index[cols][None, :]), sub)
        return matrix

    def excluded_by_class(self, hist: np.ndarray) -> dict[str, int]:
        """Labelled pixels per reference class where the classification is nodata."""
        out: dict[str, int] = {}
        for code in np.flatnonzero(self.ref_index >= 0):
            n = int(hist[code, CLASS_NODATA])
            if n:
                name = self.names[self.ref_index[code]]
                out[name] = out.get(name, 0) + n
        return out


def _key(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def _as_code(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def match_classes(
    classification: SideClasses,
    reference: SideClasses,
    *,
    reference_numeric: bool,
    mapping: Mapping[str, str | int] | None = None,
    match_by: MatchBy = "auto",
    reference_field: str | None = None,
) -> ClassMatch:
    """Match the classification's classes to the reference's.

    Raises:
        InvalidInputError: a mapping entry names no class; names are needed but the
            classification carries none; or the two class sets have nothing in common.
    """
    by = match_by if match_by != "auto" else ("code" if reference_numeric else "name")
    mapping = dict(mapping or {})
    if by == "name" and not classification.named and not mapping:
        where = f"the class field '{reference_field}'" if reference_field else "the reference"
        raise InvalidInputError(
            f"{where} holds class names, but the classification carries no class names "
            "(no GEOPORTAL_CLASSES tag): give a mapping from classification codes to reference "
            'names, e.g. {"1": "forest"}, or a numeric class field',
            field="mapping",
        )

    names: list[str] = []
    colors: list[str] = []
    ref_codes: list[int | None] = []
    ref_index = np.full(256, -1, dtype=np.int64)
    by_ref_name: dict[str, int] = {}
    borrow = by == "code" and not reference.named and classification.named
    for code, (name, color) in reference.classes.items():
        if not 1 <= code <= 254:
            continue
        if borrow and code in classification.classes:
            # A bare label raster knows codes only: name its classes as the classification does.
            name, color = classification.classes[code]
        ref_index[code] = len(names)
        by_ref_name.setdefault(_key(name), len(names))
        names.append(name)
        colors.append(color)
        ref_codes.append(code)

    def resolve_target(value: object, key: object) -> int:
        code = _as_code(value)
        if code is not None and 0 <= code < 256 and ref_index[code] >= 0:
            return int(ref_index[code])
        if isinstance(value, str) and _key(value) in by_ref_name:
            return by_ref_name[_key(value)]
        raise InvalidInputError(
            f"mapping {key!r}: {value!r} is no class of the reference; its classes are "
            f"{reference.names()}",
            field="mapping",
        )

    pred_names = {_key(name): code for code, (name, _) in classification.classes.items()}
    mapped: dict[int, int] = {}
    for key, value in mapping.items():
        found = _as_code(key)
        if found is None:
            if _key(str(key)) not in pred_names:
                raise InvalidInputError(
                    f"mapping key {key!r} is no class of the classification; its classes are "
                    f"{classification.names()}",
                    field="mapping",
                )
            found = pred_names[_key(str(key))]
        code = found
        if not 0 <= code <= 254:
            raise InvalidInputError(
                f"mapping key {key!r}: class codes lie within 0..254", field="mapping"
            )
        mapped[code] = resolve_target(value, key)

    pred_index = np.full(256, -1, dtype=np.int64)
    pairs: dict[int, str] = {}
    warnings: list[str] = []
    hit: set[int] = set()
    for code, (name, color) in classification.classes.items():
        if code == CLASS_NODATA:
            continue
        if code in mapped:
            index = mapped[code]
        elif by == "code" and ref_index[code] >= 0:
            index = int(ref_index[code])
            ref_name = names[index]
            if classification.named and reference.named and _key(ref_name) != _key(name):
                warnings.append(
                    f"code {code} is '{ref_name}' in the reference but '{name}' in the "
                    "classification; matched by code (give a mapping if that is wrong)"
                )
        elif by == "name" and _key(name) in by_ref_name:
            index = by_ref_name[_key(name)]
        else:
            label = name if _key(name) not in {_key(n) for n in names} else f"{name} (code {code})"
            index = len(names)
            names.append(label)
            colors.append(color)
            ref_codes.append(None)
        if index < len(ref_codes) and ref_codes[index] is not None:
            if classification.named and index not in hit:
                colors[index] = color  # the map's colours, as the classification shows them
            hit.add(index)
        pred_index[code] = index
        pairs[code] = names[index]
    return ClassMatch(
        names=names,
        colors=colors,
        reference_codes=ref_codes,
        ref_index=ref_index,
        pred_index=pred_index,
        by=by,
        pairs=pairs,
        warnings=warnings,
        matched=len(hit),
    )


def require_common(match: ClassMatch, classification: SideClasses, reference: SideClasses) -> None:
    """Refuse class sets that have nothing in common.

    Raises:
        InvalidInputError: no classification class maps to a reference class.
    """
    if match.matched:
        return
    rule = "codes" if match.by == "code" else "names"
    raise InvalidInputError(
        f"the classification's classes ({classification.names()}) and the reference's "
        f"({reference.names()}) have no {rule} in common: give a mapping from classification "
        'classes to reference classes, e.g. {"1": "forest", "2": "water"}',
        field="mapping",
    )
