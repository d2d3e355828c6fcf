"""The cache of read plans, keyed by what a client asked for, so bounded twice (LRU).

Clients choose the keys: a feature list, a service, `full_feature_names`. A key is the
deduplicated feature list (duplicates name the same columns, so they share a plan and an
entry: a request repeating one feature a million times costs one short key). The cache
keeps at most `max_entries` plans and at most `max_refs` feature references over all its
keys, dropping the least recently used first, so no sequence of requests grows it past
that. Only plans that were built are cached: an unknown feature raises before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MAX_CACHED_PLANS = 1024  # distinct feature lists
MAX_CACHED_REFS = 65_536  # feature references over all cached keys


def plan_key(features: Sequence[str] | None, feature_service: str | None, full_feature_names: bool) -> tuple:
    """The cache key of a request: its feature list without duplicates, in first-use order."""
    return (tuple(dict.fromkeys(features)) if features else (), feature_service, full_feature_names)


class PlanCache:
    """An LRU of plans bounded by entries and by the feature references of its keys."""

    def __init__(self, max_entries: int = MAX_CACHED_PLANS, max_refs: int = MAX_CACHED_REFS) -> None:
        self.max_entries, self.max_refs = max_entries, max_refs
        self._plans: OrderedDict[tuple, Any] = OrderedDict()
        self.refs = 0  # feature references held by the keys

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: tuple) -> Any:
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
        return plan

    def put(self, key: tuple, plan: Any) -> None:
        weight = len(key[0]) + 1
        if weight > self.max_refs:
            return  # larger than the whole cache: serve it, do not keep it
        if key in self._plans:
            self._plans.move_to_end(key)
            self._plans[key] = plan
            return
        while self._plans and (len(self._plans) >= self.max_entries or self.refs + weight > self.max_refs):
            old, _ = self._plans.popitem(last=False)
            self.refs -= len(old[0]) + 1
        self._plans[key] = plan
        self.refs += weight
