"""Values read from our own and our users' JSON files, checked for type and range: one rule each.

Every value a run takes from a file (a tune grid, ``postprocess.json``, ``probabilities.json``,
``plans.json``, ``dataset.json``, a model's ``config.json``) and every id it turns into a path
goes through here, so that ``"false"`` is never true, a radius is never ``-1`` or ``2.5``, a
threshold is never ``1e300`` and an id is never ``../../x``. Each refusal is one line naming
the file and the field: ``<file>: <field> must be ..., not ...``. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["Values", "name_problem"]

_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
          str: "a string", list: "a list", dict: "an object"}  # fmt: skip


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a plain file-name stem (a volume id), or None.

    The one rule for every id, whether test.csv, a file name or one of our JSON files gave it:
    not empty, no path separator (``/``, and ``\\`` which zip tools and Windows read as one),
    no control character, and not ``.`` or ``..``. Files are always ``<id>.<suffix>`` in their
    folder, so an id that passes can never name a place outside it.
    """
    if not isinstance(name, str):
        return f"{_shown(name)} is not a text"
    if not name:
        return "its id (the name up to the first dot) is empty"
    if "/" in name or "\\" in name:
        return f"its id {name!r} holds a path separator, which zip tools read as a folder"
    if any(ord(character) < 32 or ord(character) == 127 for character in name):
        return f"its id {name!r} holds a control character"
    if name in (".", ".."):
        return f"its id {name!r} names a folder, not a file"
    return None


class Values:
    """Checked reads of one file's values; every refusal is ``error("<origin>: <field> ...")``."""

    def __init__(self, origin: Path | str, error: type[Exception]) -> None:
        self.origin, self.error = str(origin), error

    def fail(self, field: str, problem: str) -> NoReturn:
        raise self.error(f"{self.origin}: {field} {problem}")

    def _wrong(self, field: str, wanted: str, value: Any) -> NoReturn:
        self.fail(field, f"must be {wanted}, not {_shown(value)}")

    def name(self, value: Any, field: str) -> str:
        """A plain name (a volume id) by :func:`name_problem`'s rule."""
        if not isinstance(value, str):
            self._wrong(field, "a plain name", value)
        problem = name_problem(value)
        if problem is not None:
            self.fail(field, f"is not a plain name: {problem}")
        return value

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):  # "false" is a non-empty string, and truthy
            self._wrong(field, "true or false", value)
        return value

    def whole(self, value: Any, field: str, *, minimum: int = 0, maximum: int | None = None) -> int:
        """An integer in [minimum, maximum]; 2.0 is accepted as 2, 2.5 and true are not."""
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self._wrong(field, "a whole number", value)
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            self.fail(field, f"must be at least {minimum}{upper}, got {value}")
        return value

    def number(
        self,
        value: Any,
        field: str,
        *,
        low: float | None = None,
        high: float | None = None,
        open_low: bool = False,
        open_high: bool = False,
    ) -> float:
        """A finite number within the given bounds (closed unless ``open_*``)."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            self._wrong(field, "a number", value)
        value = float(value)
        if not math.isfinite(value):
            self.fail(field, f"must be a finite number, not {value}")
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            left = "(" if open_low else "["
            right = ")" if open_high else "]"
            span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
            self.fail(field, f"must lie in {span}, got {value:g}")
        return value

    def fraction(self, value: Any, field: str) -> float:
        """A probability, threshold or share: a finite number in [0, 1]."""
        return self.number(value, field, low=0.0, high=1.0)

    def listing(self, value: Any, field: str, *, length: int | None = None) -> list[Any]:
        if not isinstance(value, list):
            self._wrong(field, "a list", value)
        if length is not None and len(value) != length:
            self.fail(field, f"must hold {length} values, got {len(value)}")
        return value

    def mapping(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self._wrong(field, "an object", value)
        return value

    def wholes(
        self, value: Any, field: str, *, minimum: int = 0, length: int | None = None
    ) -> list[int]:
        items = self.listing(value, field, length=length)
        return [self.whole(v, f"{field}[{i}]", minimum=minimum) for i, v in enumerate(items)]

    def numbers(
        self, value: Any, field: str, *, length: int | None = None, **bounds: Any
    ) -> list[float]:
        items = self.listing(value, field, length=length)
        return [self.number(v, f"{field}[{i}]", **bounds) for i, v in enumerate(items)]

    def choice(self, value: Any, field: str, choices: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in choices:
            self._wrong(field, f"one of {', '.join(map(repr, choices))}", value)
        return value


def _shown(value: Any) -> str:
    kind = _KINDS.get(type(value), type(value).__name__)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = repr(value)
        return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, bool):
        return str(value).lower()
    return kind
