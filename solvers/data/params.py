"""Parse and validate a Caffe Python layer's `param_str` without ever executing it.

The reference FCN layers `eval()` the string; we read it as a literal (ast.literal_eval) or as
JSON, so "{'voc_dir': '../data', 'seed': 1337}" works and "__import__('os')..." is refused.
Each data layer declares its keys as a table of `Param`s; unknown or missing keys are errors.
Every number has a bound, so a hostile param_str cannot make a layer allocate for ever:
counts (split length, classes) up to MAX_COUNT, batch_size up to MAX_BATCH, image sizes
(size, crop_size) up to readers.MAX_PIXELS pixels, scale factors within SCALE_RANGE, seeds
below 2**64, strings up to MAX_STRING characters and the text itself up to MAX_TEXT.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from netgen.errors import FcnkitError

REQUIRED = object()  # sentinel default: the key must be given
MAX_TEXT = 1 << 16  # characters of param_str
MAX_STRING = 4096  # characters of one string value (paths, split names)
MAX_COUNT = 10**7  # items in a split, classes
MAX_BATCH = 1024  # items per forward
SCALE_RANGE = (1 / 64, 16.0)  # random rescale factors


def parse_param_str(text: str | None, layer: str) -> dict[str, Any]:
    """The dict written in `text` (Python dict literal or JSON object); '' means {}."""
    if text is None or not text.strip():
        return {}
    if len(text) > MAX_TEXT:
        raise FcnkitError(f"{layer}: param_str of {len(text)} characters; more than {MAX_TEXT} "
                          "is refused")
    value = None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            short = text if len(text) <= 60 else text[:57] + "..."
            raise FcnkitError(f"{layer}: param_str is not a Python or JSON dict literal: "
                              f"{short!r}") from None
    if not isinstance(value, dict):
        raise FcnkitError(f"{layer}: param_str must be a dict, got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise FcnkitError(f"{layer}: param_str keys must be strings, got {bad[0]!r}")
    return value


# ---- value checkers: each returns the normalised value or raises ValueError(reason) ----

def string(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_STRING:
        raise ValueError(f"expected a non-empty string of at most {MAX_STRING} characters")
    if "\0" in v:
        raise ValueError("a NUL character cannot be in a path or name")
    return v


def flag(v: Any) -> bool:
    if not isinstance(v, bool):
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise ValueError("expected True/False")
    return v


def seed(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
        raise ValueError("expected an integer in 0..2**64-1 or None")
    return v


def int_in(low: int, high: int) -> Callable[[Any], int]:
    """Checker of an integer in low..high."""
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValueError(f"expected an integer in {low}..{high}")
        return v
    return check


positive_int = int_in(1, MAX_COUNT)
batch_size = int_in(1, MAX_BATCH)


def numbers(v: Any, n: int) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ValueError(f"expected {n} numbers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"expected {n} finite numbers")
        out.append(float(x))
    return tuple(out)


def mean(v: Any) -> tuple[float, float, float]:
    return numbers(v, 3)  # type: ignore[return-value]


def size(v: Any) -> tuple[int, int]:
    """An int (square) or (height, width) of positive ints, at most MAX_PIXELS pixels."""
    from .readers import MAX_PIXELS

    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v)):
        raise ValueError("expected a positive int or (height, width)")
    if v[0] * v[1] > MAX_PIXELS:
        raise ValueError(f"more than {MAX_PIXELS} pixels (8192x8192)")
    return int(v[0]), int(v[1])


def scale(v: Any) -> tuple[float, float] | None:
    """None, one factor, or a (low, high) range of positive factors."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = (v, v)
    lo, hi = numbers(v, 2)
    if not SCALE_RANGE[0] <= lo <= hi <= SCALE_RANGE[1]:
        raise ValueError(f"expected {SCALE_RANGE[0]:g} <= low <= high <= {SCALE_RANGE[1]:g}")
    return lo, hi


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def one_of(*choices: Any) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v not in choices:
            raise ValueError(f"expected one of {', '.join(map(repr, choices))}")
        return v
    return check


def subset_of(*choices: str) -> Callable[[Any], tuple[str, ...]]:
    def check(v: Any) -> tuple[str, ...]:
        if (not isinstance(v, (list, tuple)) or not v
                or any(x not in choices for x in v) or len(set(v)) != len(v)):
            raise ValueError(f"expected a non-empty list of distinct names from "
                             f"{', '.join(choices)}")
        return tuple(v)
    return check


@dataclass(frozen=True)
class Param:
    """One param_str key: how to check it, and its default (REQUIRED: no default)."""

    check: Callable[[Any], Any]
    default: Any = REQUIRED
    doc: str = ""


def validate(raw: dict[str, Any], spec: dict[str, Param], layer: str) -> dict[str, Any]:
    """Check `raw` against `spec`: every key known, every required key present, values valid.

    Returns a new dict holding every key of `spec` (defaults filled in).
    """
    unknown = sorted(set(raw) - set(spec))
    if unknown:
        raise FcnkitError(f"{layer}: param_str has unknown key '{unknown[0]}' "
                          f"(allowed: {', '.join(sorted(spec))})")
    out: dict[str, Any] = {}
    for key, param in spec.items():
        if key not in raw:
            if param.default is REQUIRED:
                raise FcnkitError(f"{layer}: param_str lacks required key '{key}'")
            out[key] = param.default
            continue
        try:
            out[key] = param.check(raw[key])
        except ValueError as e:
            raise FcnkitError(f"{layer}: param_str key '{key}' = {raw[key]!r}: {e}") from None
    return out
