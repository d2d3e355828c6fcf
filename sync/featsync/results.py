"""The last result of each check, kept as JSON where the UI and /metrics can read it.

`featsync validate`, `drift`, `status` and `verify` (the library functions, so the Python API
records too) write what they found per feature view into
``target/featsync/<target>/results/<kind>.json``::

    {"kind": "validate", "updated_at": "2024-04-30T00:00:00Z",
     "views": {"user_transaction_features": {"recorded_at": "...", ...the view's result...}}}

Each entry also records what it was about (``"about"``): the view's version, and for the
checks that read the online store (verify, status) which store, ``key_prefix`` and ``redis``
(the server's address without credentials: ``redis://host:port/db``). A reader (the UI,
/metrics) shows a result only when its ``about`` is what it serves, else "not run": a
validation of v1 is not v2's, a verify of another Redis or key prefix not this server's.

Each run replaces the entries of the views it checked and keeps the others, so a
``--select`` run does not forget the rest. Writes are atomic (a temporary file renamed
over the old one, under a lock against a concurrent run), so a reader never sees half a
file. Recording is a side effect: a project that cannot be written (read-only checkout)
logs a warning and the check itself still succeeds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featsync.floats import map_floats
from featsync.project import Project

if TYPE_CHECKING:
    from featsync.registry import FeatureView, Registry

KINDS = frozenset({"validate", "drift", "status", "verify"})
ONLINE_KINDS = frozenset({"status", "verify"})  # checks that read an online store: about it too
log = logging.getLogger(__name__)


def result_path(project: Project, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    return project.target_path / "results" / f"{kind}.json"


def about(view: FeatureView, store: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a result of `view` is about: its version, and (status, verify) the `online_store`."""
    return {"version": view.version, **(store or {})}


def online_store(registry: Registry, client: Any, key_prefix: str | None) -> dict[str, Any]:
    """Which online store a check read or a server serves: the key prefix and the Redis address
    (no credentials; None without a client)."""
    from featsync.online.connections import redis_location

    return {"key_prefix": key_prefix or registry.project_name, "redis": redis_location(client)}


def save_result(
    project: Project,
    kind: str,
    views: Mapping[str, Mapping[str, Any]],
    now: datetime | None = None,
    abouts: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path | None:
    """Record each view's result (JSON-ready dicts), replacing those views' previous entries,
    with what it was about (`abouts`, by view: see `about`).

    Returns the file written, or None when it could not be written (logged, not raised).
    """
    path = result_path(project, kind)
    stamp = _iso(now or datetime.now(UTC))
    abouts = abouts or {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            stored = _read(path).get("views", {})
            stored.update(
                {
                    name: {"recorded_at": stamp, **result, **({"about": dict(abouts[name])} if name in abouts else {})}
                    for name, result in views.items()
                }
            )
            document = {"kind": kind, "updated_at": stamp, "views": dict(sorted(stored.items()))}
            text = json.dumps(map_floats(document, _finite), indent=1, default=str, allow_nan=False)
            fd, tmp = tempfile.mkstemp(prefix=f".{kind}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except (OSError, ValueError) as exc:
        log.warning("could not record the %s result in %s: %s", kind, path, exc)
        return None
    log.debug("recorded the %s result of %s in %s", kind, ", ".join(views), path)
    return path


def load_result(project: Project, kind: str) -> dict[str, Any]:
    """The recorded document ({} when nothing was recorded or the file is unreadable)."""
    return _read(result_path(project, kind))


def view_results(project: Project, kind: str) -> dict[str, dict[str, Any]]:
    """The recorded result of each view, by view name."""
    return load_result(project, kind).get("views", {})


class ResultCache:
    """Recorded results for a long-running reader (the server, the UI): a file is re-read only
    when it changed (mtime or size), so a page or a scrape costs a stat() per kind.

    `store` says which online store the reader serves (`online_store`; None: none), for
    `current` to show a status or verify only when it was about that store."""

    def __init__(self, project: Project, store: Callable[[], Mapping[str, Any] | None] = lambda: None):
        self.paths = {kind: result_path(project, kind) for kind in KINDS}
        self.store = store
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    def views(self, kind: str) -> dict[str, dict[str, Any]]:
        path = self.paths[kind]
        try:
            stat = path.stat()
        except OSError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(kind)
        if cached is None or cached[0] != stamp:
            views = _read(path).get("views", {})
            cached = self._cache[kind] = (stamp, {name: v for name, v in views.items() if isinstance(v, dict)})
        return cached[1]

    def of(self, kind: str, view: str) -> dict[str, Any] | None:
        return self.views(kind).get(view)

    def current(self, kind: str, view: FeatureView) -> dict[str, Any] | None:
        """The view's recorded result if it is about what is served now: this version and (status,
        verify) this reader's store; else None, shown as "not run". A result recorded without
        `about` (by an older featsync) is about nothing known: None too."""
        result = self.of(kind, view.name)
        if result is None:
            return None
        store = self.store() if kind in ONLINE_KINDS else None
        if kind in ONLINE_KINDS and store is None:
            return None
        return result if result.get("about") == about(view, store) else None


def validation_failures(result: Mapping[str, Any] | None) -> int | None:
    """Expectations that did not pass in a recorded validation (None: never validated).

    A suite that could not run at all (status error, no expectation results) counts as one."""
    if result is None:
        return None
    results = result.get("results")
    results = results if isinstance(results, list) else []  # a file edited by hand: counted, never a crash
    failed = sum(1 for r in results if not isinstance(r, dict) or r.get("status") != "passed")
    return failed or (1 if result.get("status") == "error" else 0)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable result file %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("views"), dict) else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the file: two runs merging at once would lose one's views."""
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _finite(value: float) -> float | None:
    """NaN and infinities (a p-value of a constant column, say) as null: JSON has neither."""
    return value if math.isfinite(value) else None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
