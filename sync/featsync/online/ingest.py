"""Pushed rows, end to end: checked, logged offline, written online (FeatureStore.push, the CLI's
`push --rows`, the stream consumer, and the server's POST /push, which shares `check`).

Order matters for the guarantees. `check` does everything that can refuse a request
(columns, types, ranges, NULL keys, the suite's row-level expectations, the online encoding)
and writes nothing, so a refused request writes nothing, whatever its destination; only
then `write` appends the offline log (durably) and writes online, in that order, so a value
that was served is always in the log the training sets read (a failure after the log but
before Redis leaves a row offline only, which a retry makes consistent: both writes are
idempotent under newest-wins and the latest_rows dedup). A caller can therefore tell a
refusal (a FeatsyncError from `check`: the rows' fault) from a failure to write.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import redis

from featsync.errors import FeatsyncError, NotFoundError
from featsync.online.layout import Layout
from featsync.online.push import Pusher, PushStats, encode_pushed
from featsync.online.row_checks import RowChecks
from featsync.online.row_push import PushedRows, TypedRows, encode_small, typed_rows
from featsync.online.rows import TO_ONLINE, Destination, PushRowsError, conform
from featsync.online.state import layout_of
from featsync.online.validity import epoch_micros
from featsync.project import Project
from featsync.registry import FeatureView, Registry


@dataclass
class PushResult:
    """What one push of rows did."""

    feature_view: str
    rows: int  # rows given
    to: str
    online: PushStats | None = None
    offline_file: str | None = None  # where the offline log got the rows (a file or table)
    notes: list[str] = field(default_factory=list)  # expectations not applied, and why

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["online"] = None if self.online is None else self.online.as_dict()
        return out


SKIPPED = "the suite's expectations were not applied (skipped)"


@dataclass(frozen=True)
class Checked:
    """A request `RowIngest.check` accepted, ready to write: nothing of it is written yet."""

    view: FeatureView
    rows: int  # rows given
    to: str  # online, offline or online_and_offline (checked)
    table: pa.Table | None  # the conformed rows, for the offline log (None: the row path, online only)
    online: PushedRows | None  # the online writes (None: not online)
    notes: list[str]  # expectations not applied, and why

    @property
    def destination(self) -> Destination:
        return Destination.parse(self.to)


@dataclass
class RowIngest:
    """Pushes client rows into one project's online store and offline log."""

    project: Project
    client: redis.Redis | None = None  # None: offline only
    key_prefix: str | None = None
    _checks: dict[str, RowChecks] = field(default_factory=dict, init=False, repr=False)
    _pusher: Pusher | None = field(default=None, init=False, repr=False)
    _registry: Registry | None = field(default=None, init=False, repr=False)
    _layouts: dict[str, Layout] = field(default_factory=dict, init=False, repr=False)
    _credentials: Any = field(default=None, init=False, repr=False)

    @property
    def registry(self) -> Registry:
        """The registry, loaded once (Project.registry checks the manifest's freshness on every
        call, which costs milliseconds: too much per pushed request)."""
        if self._registry is None:
            self._registry = self.project.registry()
        return self._registry

    def view(self, name: str) -> FeatureView:
        view = self.registry.feature_views.get(name)
        if view is None:
            known = ", ".join(sorted(self.registry.feature_views)) or "none"
            raise NotFoundError(f"no feature view named '{name}' to push to (feature views: {known})")
        return view

    def checks(self, view: FeatureView) -> RowChecks:
        """The row-level part of the view's suite (loaded once; none when the view has no suite)."""
        if view.name not in self._checks:
            from featsync.quality.suites import load_suites, suite_file_of

            suite = None
            if suite_file_of(self.project, view.name) is not None:
                suite = load_suites(self.project, self.registry).get(view.name)
            self._checks[view.name] = RowChecks(view.name, suite)
        return self._checks[view.name]

    def prepare(
        self, name: str, rows: Any, to: str, now: datetime | None = None, expectations: bool = True
    ) -> tuple[FeatureView, pa.Table, Destination]:
        """Check a request completely (nothing written): the view, the destination, every row
        (types always; the suite's row-level expectations unless `expectations` is False)."""
        destination = Destination.parse(to)
        view = self.view(name)
        if destination.online and not view.online:
            raise PushRowsError(f"feature view '{view.name}' is not online (online: false); push it with to='offline'")
        table = conform(view, rows)
        if expectations:
            self.checks(view).check(table, now or datetime.now(UTC))
        return view, table, destination

    def prepare_small(
        self, name: str, rows: Any, to: str, now: datetime | None = None, expectations: bool = True
    ) -> tuple[FeatureView, TypedRows] | None:
        """`prepare` for a small online request of plain values, typed row by row
        (featsync.online.row_push); None when `prepare` must decide (any other request, and
        every one it would refuse, so that its error is the one given)."""
        if to != TO_ONLINE:
            return None
        view = self.view(name)
        typed = typed_rows(view, rows) if view.online else None
        if typed is None:
            return None
        if expectations and self.checks(view).active:
            self.checks(view).check(typed.table(), now or datetime.now(UTC))
        return view, typed

    def log_offline(self, view: FeatureView, table: pa.Table) -> str:
        from featsync.offline.pushlog import append
        from featsync.offline.warehouse import profile_credentials

        if self._credentials is None:  # read once: the profile is parsed on every call otherwise
            self._credentials = profile_credentials(self.project)
        return append(self.project, view, table, self._credentials)

    def encode_small(
        self, name: str, rows: Any, to: str, now: datetime, expectations: bool = True
    ) -> tuple[FeatureView, int, PushedRows] | None:
        """A small online request of plain rows, checked, typed and encoded row by row
        (featsync.online.row_push): (view, rows given, what encode_pushed gives for them);
        None when `prepare` and encode_pushed must decide. Not for a Redis Cluster, whose
        script calls hold the keys of one hash slot each (encode_pushed's rows are cut so)."""
        small = self.prepare_small(name, rows, to, now, expectations)
        if small is None:
            return None
        view, typed = small
        encoded = encode_small(self.layout(view), typed, epoch_micros(now))
        return None if encoded is None else (view, typed.num_rows, encoded)

    def clock(self) -> datetime:
        """The push's clock (the Pusher's, as push_rows'), for expiry and the suite's parameters."""
        return datetime.fromtimestamp(self.pusher().now() if self.client is not None else time.time(), UTC)

    def check(
        self, name: str, rows: Any, to: str, now: datetime, expectations: bool = True, small: bool | None = None
    ) -> Checked:
        """A request checked and encoded (nothing written; a refusal is a FeatsyncError naming the
        row and column): a small online request of plain rows row by row when `small` (by
        default: when this ingest writes to one Redis, not a Cluster, whose script calls must
        be cut by hash slot as the batch path's are), else the batch path."""
        if small is None:
            small = self.client is not None and not isinstance(self.client, redis.RedisCluster)
        if small:
            encoded = self.encode_small(name, rows, to, now, expectations)
            if encoded is not None:
                view, n, pushed = encoded
                return Checked(view, n, to, None, pushed, self.notes(view, expectations))
        view, table, _ = self.prepare(name, rows, to, now, expectations)
        return self.checked(view, table, to, now, self.notes(view, expectations))

    def notes(self, view: FeatureView, expectations: bool = True) -> list[str]:
        """The expectations a push of the view does not apply, and why."""
        return list(self.checks(view).notes) if expectations else [SKIPPED]

    def checked(self, view: FeatureView, table: pa.Table, to: str, now: datetime, notes: list[str]) -> Checked:
        """Conformed rows (`prepare`'s) encoded for their online write."""
        online = encode_pushed(self.layout(view), table, epoch_micros(now)) if Destination.parse(to).online else None
        return Checked(view, table.num_rows, to, table, online, notes)

    def check_each(
        self, name: str, rows: list[dict[str, Any]], to: str, now: datetime
    ) -> tuple[Checked | None, list[tuple[int, FeatsyncError]]]:
        """Rows checked one by one, for a caller that sets the refused ones aside (the stream
        consumer's dead letters): the accepted rows as one Checked (one write: one offline log
        file), and each refused row's index and error."""
        tables: list[pa.Table] = []
        refused: list[tuple[int, FeatsyncError]] = []
        view = None
        for index, row in enumerate(rows):
            try:
                view, table, _ = self.prepare(name, [row], to, now)
            except FeatsyncError as exc:
                refused.append((index, exc))
                continue
            tables.append(table)
        if not tables:
            return None, refused
        return self.checked(view, pa.concat_tables(tables), to, now, self.notes(view)), refused

    def write(self, checked: Checked) -> PushResult:
        """Write what `check` accepted: the offline log first, then online."""
        view = checked.view
        result = PushResult(view.name, checked.rows, checked.to, notes=checked.notes)
        if checked.destination.offline and checked.rows:
            result.offline_file = self.log_offline(view, checked.table)
        if checked.online is not None:
            result.online = self.pusher().write_pushed(view, self.layout(view), checked.online)
        return result

    def push(self, name: str, rows: Any, to: str = "online", expectations: bool = True) -> PushResult:
        """Check the rows completely, then write them (see the module docstring)."""
        return self.write(self.check(name, rows, to, self.clock(), expectations))

    def layout(self, view: FeatureView) -> Layout:
        if view.name not in self._layouts:
            self._layouts[view.name] = layout_of(self.registry, view, self.key_prefix)
        return self._layouts[view.name]

    def pusher(self) -> Pusher:
        if self.client is None:
            raise FeatsyncError("no Redis to push online to")
        if self._pusher is None:
            self._pusher = Pusher(self.project, self.client, self.key_prefix)
        return self._pusher
