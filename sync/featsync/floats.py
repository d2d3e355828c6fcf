"""Non-finite floats (NaN, +-inf) in featsync's JSON: one rule for every JSON of feature values.

JSON has no NaN or infinity. featsync writes them as the strings "NaN", "Infinity" and
"-Infinity": the proto3 JSON mapping of a double, which Feast's own feature server answers
too (feast/feature_server_utils.py). null would read as a missing value while its status
says PRESENT, and bare NaN is not JSON. `featsync get --json` and the HTTP server's
/get-online-features both follow this rule (docs/time-and-types.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

NAN, INFINITY, MINUS_INFINITY = "NaN", "Infinity", "-Infinity"


def json_float(value: float) -> float | str:
    """A finite float unchanged; NaN, inf and -inf as their proto3 JSON strings."""
    if math.isfinite(value):
        return value
    if value != value:
        return NAN
    return INFINITY if value > 0 else MINUS_INFINITY


def json_floats(values: list[Any]) -> list[Any]:
    """A float column (None for a missing or NULL value) ready for JSON: `values` itself when
    every value is finite, else a copy with the non-finite ones as strings (json_float).

    The common case costs one pass in C and no Python per value: the sum of the non-zero
    values (filter(None, ...) also drops the Nones) is finite unless one of them is not (or
    finite values overflow, which only sends the column through the exact pass below).
    """
    try:
        if math.isfinite(sum(filter(None, values))):
            return values
    except (OverflowError, TypeError):  # an on-demand feature's huge int, say: the exact pass decides
        pass
    return [json_float(value) if type(value) is float else value for value in values]


def map_floats(value: Any, convert: Callable[[float], Any]) -> Any:
    """`value` (dicts, lists and tuples of JSON-ready values) with every float put through
    `convert`: json_float for feature values (`featsync ... --json`), null for the statistics of
    recorded results (featsync.results, whose readers expect numbers or null)."""
    if isinstance(value, float):
        return convert(value)
    if isinstance(value, Mapping):
        return {k: map_floats(v, convert) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_floats(v, convert) for v in value]
    return value
