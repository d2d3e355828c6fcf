"""The server's Feast response for one entity row (its own short path) is byte for byte the general path's."""

from __future__ import annotations

import orjson
import pytest

from featsync.online.server import _feast_response_one_row, _feast_response_rows, feast_response
from featsync.online.serving import EXPIRED, NOT_FOUND, PRESENT, OnlineResponse

T = 1_767_243_600_123_456  # 2026-01-01T05:00:00.123456Z in microseconds


def one_row(status_a: str, a, status_c: str, c, b_micros: int | None) -> OnlineResponse:
    """Two views (v1: a, a2 on one key; v2: c) plus an on-demand feature (od, no view)."""
    return OnlineResponse(
        entities={"user_id": ["u1"], "merchant_id": [7]},
        features={"a": [a], "a2": [None if status_a != PRESENT else 3.5], "c": [c], "od": [None if a is None else 1.5]},
        statuses={"a": [status_a], "a2": [status_a], "c": [status_c], "od": [status_a]},
        event_micros={"v1": [T if status_a == PRESENT else None], "v2": [b_micros]},
        feature_views={"a": "v1", "a2": "v1", "c": "v2"},
        view_statuses={"v1": [status_a], "v2": [status_c]},
    )


@pytest.mark.parametrize(
    "response",
    [
        one_row(PRESENT, 1, PRESENT, "x", T - 1_000_000),
        one_row(PRESENT, None, NOT_FOUND, None, None),  # a stored NULL beside a present value of its view
        one_row(EXPIRED, None, PRESENT, None, 0),  # expired; a present NULL at the epoch itself
        one_row(NOT_FOUND, None, EXPIRED, None, None),
    ],
)
def test_one_row_path_gives_the_general_paths_bytes(response):
    fast = orjson.dumps(_feast_response_one_row(response), option=orjson.OPT_UTC_Z)
    general = orjson.dumps(_feast_response_rows(response, 1), option=orjson.OPT_UTC_Z)
    assert fast == general
    assert orjson.dumps(feast_response(response, 1), option=orjson.OPT_UTC_Z) == fast
    assert b'"event_timestamps":["1970-01-01T00:00:00Z"]' in fast  # the entity columns, as Feast gives them


@pytest.mark.parametrize(("value", "shown"), [(float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity")])
def test_non_finite_floats_are_strings_on_both_paths(value, shown):
    """A float feature's NaN and +-inf as Feast's server writes them (the proto3 JSON mapping),
    status PRESENT, on the one-row path and the general one; only float features are looked at."""
    response = one_row(PRESENT, value, PRESENT, "x", T)
    response.float_features = frozenset({"a", "a2", "od"})
    fast = orjson.dumps(_feast_response_one_row(response), option=orjson.OPT_UTC_Z)
    assert fast == orjson.dumps(_feast_response_rows(response, 1), option=orjson.OPT_UTC_Z)
    results = orjson.loads(fast)["results"]
    assert results[2]["values"] == [shown] and results[2]["statuses"] == ["PRESENT"]
    assert response.features["a"][0] is value  # the response itself keeps the float
