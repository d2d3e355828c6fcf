"""Push state in Redis: which view owns a view id, and how far each view has been pushed.

Each feature view version has one state hash, ``fs:<view id>`` (see featsync.online.layout):
``identity`` names the (prefix, view, version) that owns the id, and the other fields record
the last completed push (``watermark``, ``last_push_at``, ``rows_read``, ``keys_written``,
``mode``) and ``newest_event_time``, the newest event time ever written online (what
freshness is measured from). Push writes it; status, verify, the UI and the server's
/metrics read it. Keeping it here lets them read it without building a pusher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from featsync.errors import FeatsyncError
from featsync.online.layout import Layout
from featsync.registry import FeatureView, Registry

IDENTITY = "identity"
NEWEST_EVENT = "newest_event_time"


def layout_of(registry: Registry, view: FeatureView, key_prefix: str | None = None) -> Layout:
    """The online layout of a view under a key prefix (default: the dbt project's name)."""
    return Layout(key_prefix or registry.project_name, view)


def read_state(client: Any, layout: Layout) -> dict[str, str]:
    """The view's push state: watermark, last_push_at, counts of the last push ({} if never pushed)."""
    return decode_state(client.hgetall(layout.state_key))


async def read_states(client: Any, layouts: list[Layout]) -> list[dict[str, str]]:
    """Several views' push states in one pipelined round trip, on an async client (server, UI)."""
    if not layouts:
        return []
    pipe = client.pipeline(transaction=False)
    for layout in layouts:
        pipe.hgetall(layout.state_key)
    return [decode_state(raw) for raw in await pipe.execute()]


def decode_state(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """An HGETALL reply of a state hash (sync or async client) as read_state returns it."""
    return {k.decode(): v.decode() for k, v in raw.items() if k != IDENTITY.encode()}


def claim(client: Any, layout: Layout) -> dict[str, str]:
    """Record which view owns the view id before writing under it, refuse an id owned by
    another (a 40-bit hash collision), and return the view's state."""
    client.hsetnx(layout.state_key, IDENTITY, layout.identity)
    state = {k.decode(): v.decode() for k, v in client.hgetall(layout.state_key).items()}
    owner = state.pop(IDENTITY, None)
    if owner != layout.identity:
        raise FeatsyncError(
            f"feature view '{layout.view.name}' v{layout.view.version} of '{layout.project}' hashes to the key prefix "
            f"{layout.prefix} that '{owner}' already uses; push it under another key prefix"
        )
    return state


def save_state(client: Any, layout: Layout, fields: Mapping[str, Any]) -> None:
    """Record a completed push; called only after every row of the view was written."""
    client.hset(layout.state_key, mapping=dict(fields))
