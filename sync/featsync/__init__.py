"""featsync: a SQL-first feature store. dbt models are feature views; featsync syncs and serves them.

``from featsync import FeatureStore`` is the Python entry point (shaped like Feast's). It is
imported lazily, so ``featsync --help`` and other light commands do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featsync.store import FeatureStore

__all__ = ["FeatureStore"]


def __getattr__(name: str) -> Any:
    if name == "FeatureStore":
        from featsync.store import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'featsync' has no attribute {name!r}")
