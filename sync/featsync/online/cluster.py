"""Redis Cluster: push's writes and the online reads, per master, pipelined.

Push writes a cluster the way it writes one Redis: column-wise, per master, pipelined. A
batch's hash slots are computed at once in numpy (CRC16 as Redis defines it, hash tags
included), the slot → master map comes from `CLUSTER SHARDS` (`CLUSTER SLOTS` before Redis
7, or when an ACL refuses SHARDS), and each master gets its rows as one pipeline built with
push's own column-wise packers: `SET key value PXAT t NX` while keys are absent, the
WRITE_NEWER script for the rows whose key existed, one call per hash slot (a script's
declared keys must share a slot, even with Redis 7's allow-cross-slot-keys), so a call
holds batch rows / 16,384 rows: push joins the warehouse's batches into 4 times bigger ones
for a cluster (push.CLUSTER_BATCH_ROWS, about 16 rows a call), and frames and reads the
calls without a Python step per call (push.script_calls, read_script_replies). The
pipelines of all masters are sent before any reply is read, so the masters work at the same
time, and push encodes its next batch meanwhile.

Redirections are followed row by row: `MOVED` (a slot moved for good: the map is read again)
and `ASK` (a slot is being migrated and this key is already on the target: the row is resent
there after `ASKING`); `TRYAGAIN`, `CLUSTERDOWN`, a lost connection or a failed-over master
resend the rows with backoff after reading the map again, at most RETRIES rounds without
progress, then fail as unreachable (push's message). Every write is idempotent (newest event
time wins), so resending is always safe. Semantics are push's (featsync.online.push): this
module only routes.

Reads (ReadRoute) send each master one pipeline of `GET`s, blocking (ClusterReader, for
OnlineReader) or on raw asyncio connections (AsyncClusterMget, for `featsync serve`), and
follow `MOVED` and `ASK` key by key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from binascii import crc_hqx
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.crc import key_slot

from featsync.online.connections import RETRIES, AsyncMget, cluster_node_client, read_lines, read_replies
from featsync.online.push import REPLY_FIELDS, Rows, call_starts, pack_set_nx, read_reply_lines, refused, script_calls
from featsync.online.validity import EXPIRED

SLOTS = 16384
NO_NODE = -1
COLON, STAR = ord(":"), ord("*")  # RESP: an integer reply, an array
LONG_KEY = 256  # keys longer than this (rare) get their slot one by one, not in the padded matrix


def _crc16_table() -> np.ndarray:
    """CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), the one Redis Cluster uses."""
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table[byte] = crc & 0xFFFF
    return table


CRC16 = _crc16_table()


def key_slots(keys: pa.Array) -> np.ndarray:
    """The hash slot of every key of a batch, as Redis Cluster computes it.

    CRC16 runs column-wise: one numpy step per byte position over every key at once, after
    the keys' common prefix (a view's keys share theirs), which is hashed once. A key with a
    hash tag (a `{`: only what is between it and the next `}` is hashed, when not empty) or
    longer than LONG_KEY bytes is hashed on its own by redis-py's key_slot, the reference
    this function is tested against.
    """
    if not (pa.types.is_string(keys.type) or pa.types.is_binary(keys.type)):
        keys = pc.cast(keys, pa.binary())  # same buffers for string and binary: no copy for those
    n = len(keys)
    slots = np.zeros(n, dtype=np.int64)
    if n == 0:
        return slots
    _, offsets_buffer, data_buffer = keys.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=n + 1, offset=keys.offset * 4).astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    odd = lengths > LONG_KEY
    braces = np.flatnonzero(data[offsets[0] : offsets[-1]] == ord("{")) + offsets[0]
    odd[np.searchsorted(offsets, braces, side="right") - 1] = True  # the keys holding a `{`
    fast = np.flatnonzero(~odd)
    if len(fast):
        starts, lengths = starts[fast], lengths[fast]
        common, head = 0, 0
        while common < int(lengths.min()):
            byte = data[starts + common]
            if (byte != byte[0]).any():
                break
            head = ((head << 8) & 0xFFFF) ^ int(CRC16[(head >> 8) ^ int(byte[0])])
            common += 1
        positions = np.arange(common, int(lengths.max()))[:, None]
        matrix = data[np.minimum(starts[None, :] + positions, len(data) - 1)].astype(np.uint16)  # byte j of every key
        active = lengths[None, :] > positions
        crc = np.full(len(fast), head, dtype=np.uint16)
        for j in range(len(positions)):
            crc = np.where(active[j], (crc << 8) ^ CRC16[(crc >> 8) ^ matrix[j]], crc)
        slots[fast] = crc & (SLOTS - 1)
    for i in np.flatnonzero(odd):
        slots[i] = key_slot(keys[int(i)].as_py().encode() if pa.types.is_string(keys.type) else keys[int(i)].as_py())
    return slots


@dataclass
class SlotMap:
    """Which master owns each hash slot: an index into `nodes` per slot (NO_NODE: unassigned)."""

    nodes: list[tuple[str, int]]
    owners: np.ndarray

    @classmethod
    def read(
        cls, client: redis.RedisCluster, node_client: Callable[[str, int], redis.Redis], known: list[tuple[str, int]] = ()
    ) -> SlotMap:
        """The map as a reachable node states it: CLUSTER SHARDS, or CLUSTER SLOTS before Redis 7.

        Asks the nodes redis-py knows, then those this writer saw; the first answer wins (a
        MOVED that comes back sends us here again)."""
        candidates = [(n.host, int(n.port)) for n in client.get_nodes()]
        candidates += [a for a in known if a not in candidates]
        error: Exception | None = None
        for host, port in candidates:
            node = node_client(host, port)
            try:
                try:
                    return cls._from_shards(node.execute_command("CLUSTER SHARDS"), host)
                except redis.ResponseError as exc:
                    if not shards_refused(exc):
                        raise
                    return cls._from_slots(node.execute_command("CLUSTER SLOTS"), host)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                error = exc
        raise redis.ConnectionError(f"no node of the cluster gave its slot map: {error}")

    @classmethod
    def _from_shards(cls, shards: list[Any], asked: str) -> SlotMap:
        owners = np.full(SLOTS, NO_NODE, dtype=np.int64)
        nodes: list[tuple[str, int]] = []
        for shard in shards:
            shard = _as_dict(shard)
            for node in shard.get("nodes", []):
                node = _as_dict(node)
                if _text(node.get("role")) != "master" or _text(node.get("health", "online")) != "online":
                    continue
                host = _text(node.get("endpoint") or node.get("ip") or "")
                host = asked if host in ("", "?") else host
                port = int(node.get("port") or node.get("tls-port"))
                nodes.append((host, port))
                ranges = [int(x) for x in shard.get("slots", [])]
                for lo, hi in zip(ranges[::2], ranges[1::2], strict=True):
                    owners[lo : hi + 1] = len(nodes) - 1
                break
        return cls(nodes, owners)

    @classmethod
    def _from_slots(cls, ranges: Any, asked: str) -> SlotMap:
        owners = np.full(SLOTS, NO_NODE, dtype=np.int64)
        nodes: list[tuple[str, int]] = []
        # redis-py parses CLUSTER SLOTS into {(lo, hi): {"primary": (host, port), ...}}.
        items = ranges.items() if isinstance(ranges, dict) else ((tuple(r[:2]), {"primary": r[2][:2]}) for r in ranges)
        for (lo, hi), owner in items:
            host, port = owner["primary"][:2]
            host = _text(host) or asked
            address = (host, int(port))
            if address not in nodes:
                nodes.append(address)
            owners[int(lo) : int(hi) + 1] = nodes.index(address)
        return cls(nodes, owners)


def shards_refused(error: Exception) -> bool:
    """CLUSTER SHARDS is unknown (Redis before 7) or not allowed to this user (an ACL without
    +cluster|shards, as managed services set them): the map is read from CLUSTER SLOTS then."""
    text = str(error).lower()
    return "unknown" in text or text.startswith("noperm") or "no permissions" in text


def _as_dict(value: Any) -> dict[str, Any]:
    """A RESP3 map or a RESP2 flat [key, value, ...] list as a dict with text keys."""
    if isinstance(value, dict):
        return {_text(k): v for k, v in value.items()}
    return {_text(k): v for k, v in zip(value[::2], value[1::2], strict=True)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""


# Per-row outcome of a round.
PENDING, CREATED, EXISTED, DONE = 0, 1, 2, 3


@dataclass
class Part:
    """The rows of one round sent to one master on one connection, one way."""

    node: int
    rows: np.ndarray  # positions in the batch, in the order sent
    asking: bool  # each command after ASKING (an ASK redirection)
    set_nx: bool  # SET NX per row, else the script per hash slot
    single: bool  # the script one row per call (after ASKING, or after TRYAGAIN)
    connection: Any = None  # None: sending failed (error says why)
    error: Exception | None = None

    def groups(self, slots: np.ndarray) -> np.ndarray:
        """Where each hash slot's rows start (rows sorted by slot); every row with `single`."""
        return np.arange(len(self.rows)) if self.single else np.flatnonzero(np.diff(slots[self.rows], prepend=-1))

    def calls(self, slots: np.ndarray, chunk_rows: int) -> np.ndarray:
        """Where each script call starts: a call holds rows of one slot, at most chunk_rows."""
        return call_starts(self.groups(slots), len(self.rows), chunk_rows)


@dataclass
class Sent:
    """One round's pipelines, sent and not read yet."""

    rows: Rows
    slots: np.ndarray
    parts: list[Part] = field(default_factory=list)
    unsent: list[tuple[np.ndarray, bool]] = field(default_factory=list)  # (rows, SET NX) of unassigned slots


@dataclass
class Route:
    """How each row of a batch goes next: SET NX or the script, to its ASK target, one per call."""

    set_nx: np.ndarray
    ask: np.ndarray  # a node index after ASK, else NO_NODE (by the map)
    single: np.ndarray  # the script one row per call (a multi-key call got TRYAGAIN)

    @classmethod
    def of(cls, n: int, set_nx: bool) -> Route:
        return cls(np.full(n, set_nx), np.full(n, NO_NODE, dtype=np.int64), np.zeros(n, dtype=bool))


@dataclass
class Outcome:
    """What a batch's writes did: which rows SET NX created, and the script's counts."""

    created: int = 0
    written: int = 0
    stale: int = 0
    absent: int = 0
    deleted: int = 0  # stored values removed for expired rows (validity.EXPIRED)
    set_nx_rows: int = 0  # rows that went through SET NX (to decide how the next batch goes)
    script_rows: int = 0


@dataclass
class ClusterWriter:
    """Routes push's writes to the masters of a Redis Cluster (see the module docstring)."""

    client: redis.RedisCluster
    script: str  # WRITE_NEWER
    chunk_rows: int
    map: SlotMap | None = None
    _loaded: set[tuple[str, int]] = field(default_factory=set)  # masters known to hold the script
    _clients: dict[tuple[str, int], redis.Redis] = field(default_factory=dict)

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.script.encode()).hexdigest()

    def refresh(self) -> None:
        known = self.map.nodes if self.map else []
        self.map = SlotMap.read(self.client, lambda host, port: self._node((host, port)), known)

    def _node(self, address: tuple[str, int]) -> redis.Redis:
        if address not in self._clients:
            self._clients[address] = cluster_node_client(self.client, *address)
        return self._clients[address]

    def _index(self, address: tuple[str, int]) -> int:
        assert self.map is not None
        if address not in self.map.nodes:
            self.map.nodes.append(address)
        return self.map.nodes.index(address)

    def start(self, rows: Rows, set_nx: bool) -> Sent:
        """Send a batch's first round (every row by the map) without reading any reply."""
        if self.map is None:
            self.refresh()
        n = len(rows.keys)
        route = Route.of(n, set_nx)
        route.set_nx &= rows.expire_ms != EXPIRED  # an expired row must not create its key: the script takes it
        return self._send(rows, key_slots(rows.keys), np.arange(n), route)

    def finish(self, sent: Sent) -> Outcome:
        """Read a batch's replies, then write what is left (keys that existed, redirections)
        round by round until every row is written."""
        outcome = Outcome()
        n = len(sent.rows.keys)
        state = np.full(n, PENDING, dtype=np.int8)
        route = Route.of(n, False)
        for part in sent.parts:
            route.set_nx[part.rows] = part.set_nx
        for rows, nx in sent.unsent:
            route.set_nx[rows] = nx
        quiet = 0  # rounds in a row that wrote nothing
        while True:
            settled = int(np.isin(state, (CREATED, DONE)).sum())
            trouble = self._collect(sent, state, route, outcome)
            progress = int((state != PENDING).sum()) > settled
            todo = np.flatnonzero((state == PENDING) | (state == EXISTED))
            if not len(todo):
                return outcome
            quiet = 0 if progress else quiet + 1
            if quiet > RETRIES:
                raise trouble or redis.exceptions.ClusterDownError("the cluster kept refusing featsync's writes")
            if trouble is not None:
                if not progress:
                    time.sleep(min(1.0, 0.05 * 2**quiet))
                self.refresh()
            # Rows whose key existed go through the script; redirected ones are resent as they were.
            route.set_nx[todo] &= state[todo] == PENDING
            state[todo] = PENDING
            sent = self._send(sent.rows, sent.slots, todo, route)

    def _send(self, rows: Rows, slots: np.ndarray, idx: np.ndarray, route: Route) -> Sent:
        """Pipelines per (master, ASKING, SET NX, one per call) for rows idx; replies unread."""
        assert self.map is not None
        sent = Sent(rows, slots)
        ask, nx, single = route.ask[idx], route.set_nx[idx], route.single[idx] | (route.ask[idx] >= 0)
        target = np.where(ask >= 0, ask, self.map.owners[slots[idx]])
        kinds = target * 8 + (ask >= 0) * 4 + nx * 2 + single
        for kind in np.unique(kinds):
            part = idx[kinds == kind]
            node, asking, set_nx, one = int(kind) // 8, bool(kind & 4), bool(kind & 2), bool(kind & 1)
            if node < 0:  # an unassigned slot (CLUSTERDOWN): try again after a refresh
                sent.unsent.append((part, set_nx))
                continue
            sent.parts.append(self._send_part(sent, Part(node, part, asking, set_nx, one)))
        return sent

    def _send_part(self, sent: Sent, part: Part) -> Part:
        assert self.map is not None
        address = self.map.nodes[part.node]
        if not part.set_nx:  # script calls go per hash slot: rows sorted by slot
            part.rows = part.rows[np.argsort(sent.slots[part.rows], kind="stable")]
        rows = sent.rows.select(part.rows)
        client = self._node(address)
        try:
            if part.set_nx:
                (payload,) = pack_set_nx(rows.keys, rows.values, rows.expire_ms, asking=part.asking)
            else:
                if address not in self._loaded:
                    client.script_load(self.script)
                    self._loaded.add(address)
                payload, _ = script_calls(self.sha, rows, part.calls(sent.slots, self.chunk_rows), part.asking)
            part.connection = client.connection_pool.get_connection()
            # One buffer, one send: a script call per slot is a dozen rows or so, so a send
            # per call would cost more syscalls than the rows cost Redis.
            part.connection.send_packed_command([payload], check_health=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if part.connection is not None:
                part.connection.disconnect()
                client.connection_pool.release(part.connection)
            part.connection, part.error = None, exc
            self._loaded.discard(address)
        return part

    def _collect(self, sent: Sent, state: np.ndarray, route: Route, outcome: Outcome) -> Exception | None:
        """Read every reply of a round into per-row state; returns the last trouble (a reason to
        back off and read the map again), if any."""
        assert self.map is not None
        trouble: Exception | None = None
        if sent.unsent:
            trouble = redis.exceptions.ClusterDownError("a hash slot has no master")
        for part in sent.parts:
            address = self.map.nodes[part.node]
            if part.connection is None:
                trouble = part.error
                continue
            route.ask[part.rows] = NO_NODE
            client = self._node(address)
            try:
                if part.set_nx:
                    trouble = self._read_set_nx(part, state, route, outcome) or trouble
                else:
                    trouble = self._read_script(address, part, sent, state, route, outcome) or trouble
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                part.connection.disconnect()  # a half-read reply stream is never reused
                self._loaded.discard(address)
                trouble = exc
            except BaseException:
                part.connection.disconnect()
                raise
            finally:
                client.connection_pool.release(part.connection)
        return trouble

    def _read_set_nx(self, part: Part, state: np.ndarray, route: Route, outcome: Outcome) -> Exception | None:
        lines = len(part.rows) * (2 if part.asking else 1)
        first, errors = read_reply_lines(part.connection, lines)
        if part.asking:  # every other reply is ASKING's +OK
            first = first[1::2]
            errors = {(i - 1) // 2: text for i, text in errors.items() if i % 2}
        outcome.set_nx_rows += len(part.rows)
        created = first == ord("+")
        existed = (first == ord("_")) | (first == ord("$"))
        outcome.created += int(created.sum())
        state[part.rows[created]] = CREATED
        state[part.rows[existed]] = EXISTED
        trouble = None
        for i, error in errors.items():
            trouble = self._redirect(error, part.rows[i : i + 1], route) or trouble
        return trouble

    def _read_script(
        self, address: tuple[str, int], part: Part, sent: Sent, state: np.ndarray, route: Route, outcome: Outcome
    ) -> Exception | None:
        trouble = None
        starts = part.calls(sent.slots, self.chunk_rows)
        counts, errors = read_script_replies(part.connection, len(starts), part.asking)
        ok = np.ones(len(starts), dtype=bool)
        ok[list(errors)] = False
        sizes = np.diff(starts, append=len(part.rows))
        done = part.rows[np.repeat(ok, sizes)]
        state[done] = DONE
        outcome.script_rows += len(done)
        written, stale, absent, deleted = counts[ok].sum(axis=0).tolist()
        outcome.written += written
        outcome.stale += stale
        outcome.absent += absent
        outcome.deleted += deleted
        for i, error in errors.items():
            members = part.rows[starts[i] : starts[i] + sizes[i]]
            if error.startswith("NOSCRIPT"):
                self._loaded.discard(address)  # load it again on the next round (a failed-over master)
            trouble = self._redirect(error, members, route) or trouble
        return trouble

    def _redirect(self, error: str, rows: np.ndarray, route: Route) -> Exception | None:
        """A redirection or a transient refusal leaves the rows pending (what to do next goes in
        route); anything else fails the push."""
        assert self.map is not None
        word = error.split(" ", 1)[0].lstrip("-").upper()
        if word == "ASK":
            host, _, port = error.split()[2].rpartition(":")
            route.ask[rows] = self._index((host or self.map.nodes[0][0], int(port)))
            return None
        if word == "TRYAGAIN":  # a multi-key call on a slot in migration: one key per call then
            route.single[rows] = True
            return redis.exceptions.ClusterDownError(error)
        if word == "MOVED":
            return redis.exceptions.ClusterError(error)  # the map is read again before the next round
        if word in ("CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY"):
            return redis.exceptions.ClusterDownError(error)
        if word == "NOSCRIPT":
            return redis.exceptions.NoScriptError(error)
        raise refused(error)


@dataclass
class Gets:
    """One round of a cluster read for one master: the positions of its keys in the request,
    and their `GET`s in RESP, each after ASKING with `asking` (an ASK redirection)."""

    address: tuple[str, int]
    positions: list[int]
    asking: bool
    payload: bytes


@dataclass
class ReadRoute:
    """How a read's keys go to the masters of a Redis Cluster, for the blocking reader
    (ClusterReader) and the server's asyncio one (AsyncClusterMget) alike: one
    pipeline of `GET`s per master (a request's keys fall in as many hash slots as keys, and a
    master refuses an MGET across slots), all sent before any reply is read. Replies are
    followed key by key: `MOVED` goes to the named master and marks the map stale (read again
    before the next request), `ASK` to the named master after ASKING; at most RETRIES rounds.
    A key holding another type than a string (WRONGTYPE) reads as no value (None), as a
    single node's MGET answers it: foreign data, not an outage (docs/online-store.md). Any
    other error reply (CLUSTERDOWN, LOADING...) fails the read."""

    map: SlotMap
    stale: bool = False  # a MOVED or a lost connection: the map is read again before the next request
    owners: list[int] = field(init=False, repr=False)  # map.owners as a list: indexed key by key

    def __post_init__(self) -> None:
        self.owners = self.map.owners.tolist()

    def first(self, keys: list[bytes]) -> list[Gets]:
        """Every key to the master the map names. Slots come from CRC16 in C (binascii's
        crc_hqx is Redis' CRC16; redis-py's key_slot for a key with a hash tag): for a
        request's keys, numpy's column-wise key_slots costs more."""
        owners = self.owners
        by_node: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            node = owners[crc_hqx(key, 0) & (SLOTS - 1) if b"{" not in key else key_slot(key)]
            if node in by_node:
                by_node[node].append(i)
            else:
                by_node[node] = [i]
        if NO_NODE in by_node:
            self.stale = True  # read the map again next time: the slot may have a master by then
            raise redis.exceptions.ClusterDownError("a hash slot of the read has no master (the cluster is resharding or down)")
        return [_gets(keys, self.map.nodes[node], members, False) for node, members in by_node.items()]

    def settle(self, keys: list[bytes], values: list[Any], sent: Gets, replies: list[Any]) -> list[Gets]:
        """Put a master's replies in place; the redirected keys as the next round's Gets."""
        redirected: dict[tuple[tuple[str, int], bool], list[int]] = {}
        for i, reply in zip(sent.positions, replies, strict=True):
            if not isinstance(reply, Exception):
                values[i] = reply
                continue
            word, *rest = str(reply).split()
            if word == "WRONGTYPE":  # a key holding a hash, a list...: no value, as MGET answers on one node
                continue
            if word not in ("MOVED", "ASK") or len(rest) != 2:
                raise redis.ResponseError(str(reply))
            host, _, port = rest[1].rpartition(":")
            address = (host or sent.address[0], int(port))
            if word == "MOVED":
                self.stale = True
            redirected.setdefault((address, word == "ASK"), []).append(i)
        return [_gets(keys, address, members, asking) for (address, asking), members in redirected.items()]


def _gets(keys: list[bytes], address: tuple[str, int], members: list[int], asking: bool) -> Gets:
    ask = ASKING_COMMAND if asking else b""
    payload = b"".join(b"%s*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (ask, len(keys[i]), keys[i]) for i in members)
    return Gets(address, members, asking, payload)


ASKING_COMMAND = b"*1\r\n$6\r\nASKING\r\n"


@dataclass
class ClusterReader:
    """Reads across a Redis Cluster for featsync.online.serving.OnlineReader: ReadRoute's
    pipelines on redis-py's per-node connections, the replies parsed by hiredis straight off
    the sockets (redis-py's own mget_nonatomic sends one MGET per hash slot through its
    generic cluster pipeline, at several times the Python cost per key)."""

    client: redis.RedisCluster
    route: ReadRoute | None = None
    _clients: dict[tuple[str, int], redis.Redis] = field(default_factory=dict)

    def _node(self, address: tuple[str, int]) -> redis.Redis:
        if address not in self._clients:
            self._clients[address] = cluster_node_client(self.client, *address)
        return self._clients[address]

    def mget(self, keys: list[bytes]) -> list[Any]:
        if self.route is None or self.route.stale:
            self.route = ReadRoute(SlotMap.read(self.client, lambda host, port: self._node((host, port))))
        values: list[Any] = [None] * len(keys)
        todo = self.route.first(keys)
        for _ in range(RETRIES):
            sent = []
            try:
                for gets in todo:
                    client = self._node(gets.address)
                    connection = client.connection_pool.get_connection()
                    sent.append((client, connection, gets))
                    connection.send_packed_command([gets.payload], check_health=False)
                replies = [read_replies(c, len(gets.positions) * (2 if gets.asking else 1)) for _, c, gets in sent]
            except BaseException as exc:
                for _, connection, _ in sent:
                    connection.disconnect()  # replies may be left unread
                if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                    self.route.stale = True  # a master failed over or went away
                raise
            finally:
                for client, connection, _ in sent:
                    client.connection_pool.release(connection)
            todo = []
            for (_, _, gets), got in zip(sent, replies, strict=True):
                todo += self.route.settle(keys, values, gets, got[1::2] if gets.asking else got)
            if not todo:
                return values
        raise redis.exceptions.ClusterError(f"a read was still redirected after {RETRIES} rounds (the cluster is resharding)")


class AsyncClusterMget:
    """The server's hot read on a Redis Cluster (`featsync serve` with a redis+cluster:// URL):
    ReadRoute's pipelines of `GET`s on a connections.AsyncMget per master (raw asyncio
    connections, hiredis, requests pipelined), all masters at once, redirections followed
    key by key. The slot map comes from CLUSTER SHARDS (CLUSTER SLOTS when that is refused),
    asked of the URL's node and then of the masters seen; it is read again after a MOVED or
    a lost connection, once for all the requests waiting on it. A redis.asyncio cluster
    client (mget_nonatomic: an MGET per hash slot through its generic pipeline) cost several
    times the CPU per key."""

    def __init__(self, url: str, connect_timeout: float, read_timeout: float | None = None, size: int = 4) -> None:
        parts = urlsplit(url)
        self.userinfo = parts.netloc.rpartition("@")[0]
        self.query = parts.query
        self.seed = (parts.hostname or "localhost", parts.port or 6379)
        self.connect_timeout, self.read_timeout, self.size = connect_timeout, read_timeout, size
        self.nodes: dict[tuple[str, int], AsyncMget] = {}
        self.route: ReadRoute | None = None
        self.lock: asyncio.Lock | None = None  # made in the event loop that uses it

    def _node(self, address: tuple[str, int]) -> AsyncMget:
        if address not in self.nodes:
            host, port = address
            netloc = f"{self.userinfo}@" if self.userinfo else ""
            netloc += f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            url = urlunsplit(("redis", netloc, "/0", self.query, ""))
            self.nodes[address] = AsyncMget(url, self.connect_timeout, self.read_timeout, self.size)
        return self.nodes[address]

    async def _route(self) -> ReadRoute:
        route = self.route
        if route is not None and not route.stale:
            return route
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:  # one refresh for every request that found the map stale
            if self.route is route:
                self.route = ReadRoute(await self._read_map())
            return self.route

    async def _read_map(self) -> SlotMap:
        known = self.route.map.nodes if self.route is not None else []
        error: Exception | None = None
        for address in [self.seed, *(a for a in known if a != self.seed)]:
            node = self._node(address)
            try:
                try:
                    return SlotMap._from_shards(await node.execute(hiredis.pack_command(("CLUSTER", "SHARDS"))), address[0])
                except redis.ResponseError as exc:
                    if not shards_refused(exc):
                        raise
                    return SlotMap._from_slots(await node.execute(hiredis.pack_command(("CLUSTER", "SLOTS"))), address[0])
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, TimeoutError) as exc:
                error = exc
        raise redis.ConnectionError(f"no node of the cluster gave its slot map: {error}")

    async def mget(self, keys: list[bytes]) -> list[Any]:
        route = await self._route()
        values: list[Any] = [None] * len(keys)
        todo = route.first(keys)
        for _ in range(RETRIES):
            try:
                futures = [
                    await self._node(gets.address).submit(gets.payload, len(gets.positions) * (2 if gets.asking else 1))
                    for gets in todo
                ]
                replies = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
            except (redis.ConnectionError, redis.TimeoutError, TimeoutError):
                route.stale = True  # a master failed over or went away: read the map again next time
                raise
            sent, todo = todo, []
            for gets, got in zip(sent, replies, strict=True):
                todo += route.settle(keys, values, gets, got[1::2] if gets.asking else got)
            if not todo:
                return values
        raise redis.exceptions.ClusterError(f"a read was still redirected after {RETRIES} rounds (the cluster is resharding)")

    async def aclose(self) -> None:
        for node in self.nodes.values():
            await node.aclose()
        self.nodes = {}


def read_script_replies(connection: Any, n: int, asking: bool = False) -> tuple[np.ndarray, dict[int, str]]:
    """The replies of n pipelined WRITE_NEWER calls, read straight off the socket and parsed in
    numpy: an (n, REPLY_FIELDS) array of {written, stale, absent, deleted} (zeros for an error reply), and the text
    of each error reply by call (MOVED, ASK, TRYAGAIN, NOSCRIPT...). With `asking`, each call
    was sent after ASKING, whose +OK replies are skipped.

    A cluster's calls hold a dozen rows or so: hiredis would make a Python list per call, and
    those allocations woke Python's cyclic collector, which walked dbt's manifest again and
    again (a third of the client's time in a profile). Each reply is `*4` and four `:n` lines,
    or one `-error` line (or `+OK`); nothing else is pending on the connection, as for push's
    SET NX replies (read_reply_lines)."""
    expected = n * (2 if asking else 1)
    tops = arrays = 0  # top-level replies begun, of which arrays (1 + REPLY_FIELDS lines each)

    def complete(first: np.ndarray, ended: int) -> bool:
        nonlocal tops, arrays
        tops += int((first != COLON).sum())
        arrays += int((first == STAR).sum())
        return tops >= expected and ended >= tops + REPLY_FIELDS * arrays

    data, starts, ends, first = read_lines(connection, complete)
    if tops != expected or data[-1] != ord("\n") or not np.isin(first, list(b"*:-+")).all():
        raise redis.ConnectionError(f"Redis sent an unexpected reply stream to {n} script calls")  # a RESP3 push...
    top = np.flatnonzero(first != ord(":"))
    if asking:
        top = top[first[top] != ord("+")]  # ASKING's +OK
    if len(top) != n or (first[top] == ord("+")).any():
        raise redis.ConnectionError(f"Redis sent an unexpected reply stream to {n} script calls")
    counts = np.zeros((n, REPLY_FIELDS), dtype=np.int64)
    array = first[top] == ord("*")
    if array.any():
        lines = (top[array][:, None] + np.arange(1, REPLY_FIELDS + 1)).ravel()
        counts[array] = _integers(data, starts, ends, lines).reshape(-1, REPLY_FIELDS)
    errors = {}
    for call in np.flatnonzero(~array).tolist():
        i = int(top[call])
        errors[call] = bytes(data[starts[i] + 1 : ends[i]]).decode(errors="replace").strip()
    return counts, errors


def _integers(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The non-negative integer replies (`:123\\r\\n`) on the given lines, parsed in numpy."""
    lo = starts[lines] + 1
    width = ends[lines] - 1 - lo  # the digits, before CR LF
    column = np.arange(int(width.max()) if len(width) else 0)
    digits = data[np.minimum(lo[:, None] + column, len(data) - 1)].astype(np.int64) - ord("0")
    power = width[:, None] - 1 - column
    return np.where(power >= 0, digits * 10 ** np.maximum(power, 0), 0).sum(axis=1)
