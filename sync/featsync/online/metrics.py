"""The server's Prometheus metrics: request latency and counts, entity lookups, errors; and the
per feature view gauges computed at scrape time.

`featsync serve` runs its workers in prometheus_client's multiprocess mode (each process
writes its values to mmap'ed files in PROMETHEUS_MULTIPROC_DIR, `/metrics` adds up every
worker's). A one-entity read makes five increments (latency sum and bucket, the request
count, one lookup per view), and prometheus_client's multiprocess increment takes a lock and
asks the kernel for the process id every time, in case the process forked: together they
cost more than everything else the server's limits and checks add to a request. A worker
is one thread that never forks once its metrics exist, so `WorkerValue` drops both and
writes the same files, which `MultiProcessCollector` reads as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from featsync.monitoring.freshness import online_freshness
from featsync.online.serving import EXPIRED, NOT_FOUND, PRESENT, OnlineResponse
from featsync.registry import Registry
from featsync.results import ResultCache, validation_failures

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR_PREFIX = "featsync-metrics-"  # + the server's pid + "-" + mkdtemp's random part
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_installed_for_pid: int | None = None  # the process whose metrics write through WorkerValue


def use_worker_values() -> None:
    """Make this process's multiprocess metrics `WorkerValue`s, once, before any is created.

    prometheus_client chooses its value class (`values.ValueClass`) when imported; a second
    class writing the same per-process file would corrupt it, hence once per process."""
    global _installed_for_pid
    if _installed_for_pid == os.getpid():
        return
    from prometheus_client import values

    pid = os.getpid()
    base: Any = values.MultiProcessValue(lambda: pid)  # this process's id, read once

    class WorkerValue(base):  # type: ignore[misc, valid-type]
        """prometheus_client's mmap'ed value with a lock-free increment and no fork check (see the module)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not all(hasattr(self, name) for name in ("_value", "_file", "_key")):
                self.inc = super().inc  # a prometheus_client laid out otherwise: its own increment

        def inc(self, amount: float) -> None:
            self._value += amount
            self._file.write_value(self._key, self._value, 0.0)

    values.ValueClass = WorkerValue
    _installed_for_pid = pid


def new_metrics_dir() -> str:
    """A fresh multiprocess directory for this server, named with its pid, after removing the
    ones of servers that died without cleaning up (SIGKILL, OOM; a clean exit removes its own).

    Only directories of the temp folder named like ours, owned by this user (not symlinks),
    whose pid no process has any more are removed: a live server's directory stays, and
    a reused pid only keeps a dead server's directory a little longer."""
    root = tempfile.gettempdir()
    with os.scandir(root) as entries:
        for entry in entries:
            match = re.fullmatch(rf"{METRICS_DIR_PREFIX}(\d+)-\w+", entry.name)
            if match is None or not entry.is_dir(follow_symlinks=False) or _alive(int(match[1])):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid == os.getuid():
                    shutil.rmtree(entry.path)
    return tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or not a pid at all): not ours to judge
    return True


class Metrics:
    """Prometheus metrics; multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set (featsync serve sets it).

    prometheus_client is imported here, lazily: it picks its value store when first imported.
    Each labelled child is made once and kept by its labels, so a request only looks it up.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess

        self.registry = CollectorRegistry()
        if os.environ.get(MULTIPROC_ENV):
            use_worker_values()
            multiprocess.MultiProcessCollector(self.registry)
            target = None  # each process writes its own files; the collector adds them up
        else:
            target = self.registry
        self.latency = Histogram(
            "featsync_request_duration_seconds",
            "Time to serve a request, from the request to the response body.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.requests = Counter(
            "featsync_requests", "Requests served, by endpoint and HTTP status.", ["endpoint", "code"], registry=target
        )
        self.lookups = Counter(
            "featsync_entity_lookups",
            "Entity lookups per feature view, by status (present, not_found, expired); "
            "not-found rate = not_found / all lookups of the view.",
            ["feature_view", "status"],
            registry=target,
        )
        self.errors = Counter(
            "featsync_errors",
            "Requests that failed on the server's side (kind: the exception) or were refused by a limit "
            "(body_too_large, body_timeout, unauthorized), by endpoint.",
            ["endpoint", "kind"],
            registry=target,
        )
        self._observed: dict[tuple[str, int], tuple[Any, Any]] = {}  # (endpoint, code): (latency, requests)
        self._lookups: dict[tuple[str, str], Any] = {}  # (view, status)
        self._errors: dict[tuple[str, str], Any] = {}  # (endpoint, kind)

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        children = self._observed.get((endpoint, code))
        if children is None:
            children = (self.latency.labels(endpoint), self.requests.labels(endpoint, str(code)))
            self._observed[endpoint, code] = children
        children[0].observe(seconds)
        children[1].inc()

    def count_error(self, endpoint: str, kind: str) -> None:
        child = self._errors.get((endpoint, kind))
        if child is None:
            child = self._errors[endpoint, kind] = self.errors.labels(endpoint, kind)
        child.inc()

    def count_lookups(self, response: OnlineResponse) -> None:
        lookups = self._lookups
        for view, statuses in response.view_statuses.items():
            if len(statuses) == 1:  # one entity row: one increment, no counting
                self._lookup(lookups, view, statuses[0]).inc()
                continue
            for status in (PRESENT, NOT_FOUND, EXPIRED):
                count = statuses.count(status)
                if count:
                    self._lookup(lookups, view, status).inc(count)

    def _lookup(self, lookups: dict[tuple[str, str], Any], view: str, status: str) -> Any:
        child = lookups.get((view, status))
        if child is None:
            child = lookups[view, status] = self.lookups.labels(view, status)
        return child

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def view_gauges(registry: Registry, states: Mapping[str, Mapping[str, str]] | None, now: datetime, results: ResultCache) -> bytes:
    """Per feature view gauges, computed at scrape time (Prometheus text format).

    Freshness (now - newest event time pushed) and the last push time come from the push
    state (absent for a view never pushed, or all of them when Redis does not answer);
    validation failures from the last recorded `featsync validate` of the view's current
    version (absent if never run on it).
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    freshness = GaugeMetricFamily(
        "featsync_feature_view_freshness_seconds",
        "Now minus the newest event time pushed online, per feature view (negative: event times in the future).",
        labels=["feature_view"],
    )
    last_push = GaugeMetricFamily(
        "featsync_feature_view_last_push_timestamp_seconds",
        "Unix time of the last completed push of the feature view.",
        labels=["feature_view"],
    )
    failures = GaugeMetricFamily(
        "featsync_feature_view_validation_failures",
        "Expectations that did not pass in the feature view's last recorded validation.",
        labels=["feature_view"],
    )
    for view in registry.online_views() if states is not None else ():
        fresh = online_freshness(view, states.get(view.name, {}), now)
        if fresh.age_seconds is not None:
            freshness.add_metric([view.name], fresh.age_seconds)
        if fresh.last_push_at is not None:
            last_push.add_metric([view.name], fresh.last_push_at.timestamp())
    for name, view in registry.feature_views.items():  # of this version only: another's is not this one's
        count = validation_failures(results.current("validate", view))
        if count is not None:
            failures.add_metric([name], count)

    class Collector:
        def collect(self) -> Any:
            yield from (freshness, last_push, failures)

    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(Collector())
    return generate_latest(gauges)
