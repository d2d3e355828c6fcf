"""featsync against a real 3-master Redis Cluster started by the tests on loopback ports."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import threading
import time
import uuid

import numpy as np
import pyarrow as pa
import pytest
import redis
from redis.crc import key_slot

from conftest import delete_pushed_keys
from featsync.errors import FeatsyncError
from featsync.online.cluster import key_slots
from featsync.online.connections import redis_client
from featsync.online.push import ForeignValueError, Pusher, PushStats, Rows
from featsync.online.serving import NOT_FOUND, PRESENT, OnlineReader
from test_push import NOW, PAIRS, PROFILES, USERS, H, load, port_range, project  # noqa: F401 (fixture)


def cluster_port() -> int:
    """A free port p whose cluster bus port p + 10000 is free too (and below 65536)."""
    import socket

    ports = port_range()
    for _ in range(200):
        port = random.randint(20000, 50000) if ports is None else random.choice(ports)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    def __init__(self, workdir, nodes: int = 3):
        self.workdir = workdir
        self.ports: list[int] = []
        while len(self.ports) < nodes:  # distinct: none is bound before all are chosen
            port = cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        self.procs: dict[int, subprocess.Popen] = {}

    def create(self, replicas: int = 0) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        self.wait_ok()
        if replicas:  # every replica has synced with its master
            for _ in range(200):
                infos = [redis.Redis(port=p).info("replication") for p in self.ports]
                if all(i["role"] == "master" or i.get("master_link_status") == "up" for i in infos):
                    break
                time.sleep(0.1)

    def stop(self) -> None:
        for port in self.ports:
            if self.procs[port].poll() is None:
                self.kill(port)

    def masters(self) -> dict[str, int]:
        """node id -> port of every master."""
        out = {}
        for port in self.ports:
            me = redis.Redis(port=port, decode_responses=True).execute_command("CLUSTER MYID")
            if redis.Redis(port=port).info("replication")["role"] == "master":
                out[me] = port
        return out

    def start_node(self, port: int) -> None:
        node_dir = self.workdir / str(port)
        node_dir.mkdir(exist_ok=True)
        args = [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(node_dir),
        ]
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"cluster node {port} did not start")

    def wait_ok(self) -> None:
        for _ in range(200):
            states = []
            for port in self.ports:
                try:
                    states.append(redis.Redis(port=port).cluster("info")["cluster_state"])
                except redis.RedisError:
                    states.append("down")
            if all(state == "ok" for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become ok")

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait()

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed for the cluster tests")
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    c.create()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """3 masters with one replica each."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed for the cluster tests")
    c = Cluster(tmp_path_factory.mktemp("replicated"), nodes=6)
    c.create(replicas=1)
    yield c
    c.stop()


def test_push_read_and_incremental_on_a_cluster(project, cluster):  # noqa: F811
    load(USERS, PAIRS, PROFILES)
    client = redis_client(project, cluster.url)
    assert isinstance(client, redis.RedisCluster)
    pusher = Pusher(project, client, key_prefix=f"cluster-{uuid.uuid4().hex[:6]}")
    stats = {s.feature_view: s for s in pusher.push()}
    assert sum(s.keys_written for s in stats.values()) == 7
    reader = OnlineReader(project.registry(), client, pusher.key_prefix)
    rows = [{"user_id": "u1", "merchant_id": "m|2"}, {"user_id": "a|b\\c", "merchant_id": "m1"}]
    response = reader.get(rows, features=["fv_user:amount", "fv_pair:score", "fv_profile:tier"])
    assert response.to_dict() == {
        "user_id": ["u1", "a|b\\c"],
        "merchant_id": ["m|2", "m1"],
        "amount": [2, 5],
        "score": [1.25, None],
        "tier": ["gold", None],
    }
    # A stale slot map (every slot on the wrong master): MOVED is followed key by key, the map read again next time.
    reader._cluster.route = _wrong_masters(reader._cluster.route)
    assert reader.get(rows, features=["fv_user:amount", "fv_pair:score", "fv_profile:tier"]) == response
    assert reader._cluster.route.stale
    assert reader.get(rows, features=["fv_user:amount", "fv_pair:score", "fv_profile:tier"]) == response
    assert not reader._cluster.route.stale and len(set(reader._cluster.route.owners)) == 3
    (incremental,) = pusher.push(["fv_user"])
    assert not incremental.full_refresh and incremental.rows_read == 1
    # Pusher.unchanged compares the rows at the watermark with the stored values, across slots.
    assert pusher.unchanged(["fv_user"]) == ["fv_user"]
    load([*USERS, ("u7", NOW - H / 2, None, 7, "w")], PAIRS, PROFILES)  # a second key at the watermark
    assert pusher.unchanged(["fv_user"]) == []
    pusher.push(["fv_user"])
    assert pusher.unchanged(["fv_user"]) == ["fv_user"]
    # The keys really are spread over the masters.
    per_node = [redis.Redis(port=p).dbsize() for p in cluster.ports]
    assert sum(per_node) >= 7 and sum(1 for n in per_node if n) >= 2


def test_a_foreign_value_on_a_cluster_is_an_error_naming_its_key(project, cluster):  # noqa: F811
    """The cluster's script calls (one per hash slot) run the same WRITE_NEWER: a foreign value at
    a key fails the push with ForeignValueError naming the key, not 'Redis refused a write'."""
    load(USERS, PAIRS, PROFILES)
    client = redis_client(project, cluster.url)
    pusher = Pusher(project, client, key_prefix=f"cluster-{uuid.uuid4().hex[:6]}")
    pusher.push(["fv_user"])
    bad = pusher.layout(project.registry().feature_view("fv_user")).key(["u1"])
    client.set(bad, b"hello")
    with pytest.raises(ForeignValueError, match=f"feature view 'fv_user' v1: the value stored at Redis key {bad.decode()!r}"):
        pusher.push(["fv_user"], full_refresh=True)
    assert client.get(bad) == b"hello"
    client.delete(bad)
    assert pusher.push(["fv_user"], full_refresh=True)[0].keys_written == 3


@pytest.mark.parametrize("full_refresh", [False, True], ids=["incremental", "full_refresh"])
def test_closed_rows_remove_their_stored_values_on_a_cluster(project, cluster, full_refresh):  # noqa: F811
    """fv_profile (SCD2) rows pushed while open, half of them closed in the warehouse afterwards:
    the next push deletes those keys on their masters (script calls per hash slot), except one
    holding a newer pushed value (never older). A first push sends an already-closed row through
    the script too (not SET NX), which removes an older pushed value of its key."""
    from featsync.online.push import encode_pushed

    def push_row(user: str, at, tier: str) -> None:
        """A pushed row (the push API's encoding), written by the cluster writer: the synchronous
        row path (FeatureStore.push) takes one Redis, not a cluster."""
        no_end = pa.nulls(1, pa.timestamp("us"))
        table = pa.table({"user_id": [user], "event_timestamp": [at], "valid_to": no_end, "tier": [tier]})
        layout = pusher.layout(project.registry().feature_view("fv_profile"))
        pusher.write(encode_pushed(layout, table, int(time.time() * 1e6)).rows, PushStats("fv_profile", 1))

    users = [f"c{i}" for i in range(60)]
    rows = [(u, NOW - 2 * H, None, f"t{i}") for i, u in enumerate(users)]
    client = redis_client(project, cluster.url)
    prefix = f"cluster-{uuid.uuid4().hex[:6]}"
    pusher = Pusher(project, client, key_prefix=prefix)
    push_row("gone", NOW - 3 * H, "older")
    load(profile=[*rows, ("gone", NOW - 2 * H, NOW - H, "closed")])
    (first,) = pusher.push(["fv_profile"])  # no state yet: SET NX for the open rows
    assert (first.keys_written, first.skipped_expired, first.deleted_expired) == (60, 1, 1)
    push_row("c0", NOW - H / 2, "newer")
    closed = [(u, at, NOW - H, tier) if i % 2 == 0 else (u, at, end, tier) for i, (u, at, end, tier) in enumerate(rows)]
    load(profile=[*closed, ("gone", NOW - 2 * H, NOW - H, "closed")])
    (second,) = pusher.push(["fv_profile"], full_refresh=full_refresh)
    # Incremental: the open rows are behind the watermark ('gone' closed at NOW - H moved it
    # there: an SCD2 view's change marker counts valid_to), so only the closed ones are read.
    written = 30 if full_refresh else 0
    assert (second.keys_written, second.skipped_expired, second.deleted_expired) == (written, 31, 29)
    reader = OnlineReader(project.registry(), client, prefix)
    tiers = reader.get([{"user_id": u} for u in [*users, "gone"]], features=["fv_profile:tier"]).features["tier"]
    assert tiers == ["newer", *(None if i % 2 == 0 else f"t{i}" for i in range(1, 60)), None]


@pytest.mark.parametrize("where", ["cluster", "single"])
def test_a_key_of_another_type_reads_as_not_found_on_one_redis_and_on_a_cluster(project, cluster, redis_url, where):  # noqa: F811
    """A key under featsync's prefix holding a hash: one Redis' MGET answers it as nil (not
    found); a cluster's GET answered WRONGTYPE, which failed the whole batch as an outage
    (OnlineStoreUnavailable). Now both: that row NOT_FOUND, the others read."""
    load(USERS, PAIRS, PROFILES)
    client = redis_client(project, cluster.url if where == "cluster" else redis_url)
    pusher = Pusher(project, client, key_prefix=f"wrongtype-{uuid.uuid4().hex[:6]}")
    pusher.push(["fv_user"])
    layout = pusher.layout(project.registry().feature_view("fv_user"))
    client.hset(layout.key(["hashed"]), mapping={"a": "b"})
    try:
        reader = OnlineReader(project.registry(), client, pusher.key_prefix)
        assert reader.get([{"user_id": "hashed"}], ["fv_user:amount"]).statuses["amount"] == [NOT_FOUND]
        for rows in (2, 20):
            response = reader.get([{"user_id": "hashed"}] * (rows - 1) + [{"user_id": "u1"}], ["fv_user:amount"])
            assert response.statuses["amount"] == [NOT_FOUND] * (rows - 1) + [PRESENT]
    finally:
        client.delete(layout.key(["hashed"]))
        delete_pushed_keys(project, client, pusher.key_prefix)


def _wrong_masters(route):
    """The route with every hash slot given to the wrong master (a stale map)."""
    from featsync.online.cluster import ReadRoute, SlotMap

    return ReadRoute(SlotMap(route.map.nodes, (route.map.owners + 1) % len(route.map.nodes)))


def test_a_node_down_is_a_clear_error_then_a_rerun_completes(project, cluster):  # noqa: F811
    load(USERS, PAIRS, PROFILES)
    prefix = f"cluster-{uuid.uuid4().hex[:6]}"
    down = cluster.ports[1]
    cluster.kill(down)
    with pytest.raises(FeatsyncError) as failure:
        Pusher(project, redis_client(project, cluster.url), key_prefix=prefix).push()
    assert "Redis" in str(failure.value) and "re-run" in str(failure.value)
    cluster.start_node(down)  # rejoins with its slots (from nodes.conf), empty
    cluster.wait_ok()
    pusher = Pusher(project, redis_client(project, cluster.url), key_prefix=prefix)
    results = pusher.push()
    assert sum(s.keys_written for s in results) == 7
    reader = OnlineReader(project.registry(), pusher.client, prefix)
    assert reader.get([{"user_id": "u1"}], features=["fv_user:amount"]).features["amount"] == [2]


def test_key_slots_are_redis_cluster_s():
    """The column-wise CRC16 gives every key the slot Redis gives it, hash tags included."""
    rng = random.Random(7)
    alphabet = "ab{}|\\é:0123456789"
    keys = [f"fs:abc:{i}" for i in range(2000)]
    keys += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(2000)]
    keys += ["a{b}c", "{}x", "x{", "{{a}}", "a{}b{c}", "", "k" * 300, "{user1000}.following"]
    array = pa.array(keys)
    expected = np.array([key_slot(k.encode()) for k in keys])
    assert (key_slots(array) == expected).all()
    assert (key_slots(array.slice(1999, 7)) == expected[1999:2006]).all()  # an array with an offset
    assert (key_slots(pa.array([k.encode() for k in keys], pa.binary())) == expected).all()


def _rows(keys: list[str], version: int) -> Rows:
    """Values carrying event time `version` seconds (the script's double form) and the version, as
    the one text of a view without a null bitmap (the value shape the script checks them against)."""
    text = f"v{version}".encode()
    values = pa.array([struct.pack(">d", version * 1e6) + struct.pack("<I", len(text)) + text for _ in keys], pa.binary())
    return Rows(pa.array(keys), values, np.zeros(len(keys), dtype=np.int64), "-1 8 1 0 256")


def _write_rounds(pusher: Pusher, keys: list[str], until, at_least: int, version: int = 0) -> int:
    """Write every key again and again, each round newer, half of them through SET NX (most
    keys existing: the script takes them over), until `until()` and at least up to version
    `at_least`; returns the last version written."""
    while version < at_least or not until():
        version += 1
        stats = PushStats("t", 1)
        pusher._set_nx = version % 2 == 1
        pusher.write(_rows(keys, version), stats)
        assert stats.keys_written == len(keys) and stats.skipped_stale == 0
    return version


def _assert_latest(client: redis.RedisCluster, keys: list[str], version: int) -> None:
    values = client.mget_nonatomic(keys)
    assert [v[12:] if v else None for v in values] == [f"v{version}".encode()] * len(keys)


def test_a_resharding_during_a_push_loses_nothing(project, cluster):  # noqa: F811
    client = redis_client(project, cluster.url)
    pusher = Pusher(project, client, chunk_rows=100)
    tag = uuid.uuid4().hex[:6]
    keys = [f"featsync-cluster-{tag}:{i}" for i in range(3000)]
    masters = cluster.masters()
    source, target = list(masters)[:2]
    reshard = subprocess.Popen(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{masters[source]}", "--cluster-from", source]
        + ["--cluster-to", target, "--cluster-slots", "1500", "--cluster-yes", "--cluster-pipeline", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        version = _write_rounds(pusher, keys, lambda: reshard.poll() is not None, at_least=3)
    finally:
        reshard.wait(timeout=120)
    assert reshard.returncode == 0, reshard.stderr.read()
    _assert_latest(client, keys, version)
    # Once more on the new layout, with the writer's old map: MOVED is followed.
    _write_rounds(pusher, keys, lambda: True, at_least=version + 2, version=version)
    _assert_latest(client, keys, version + 2)
    for key in keys:
        client.unlink(key)


def test_ask_redirections_of_a_slot_in_migration_are_followed(project, cluster):  # noqa: F811
    """A slot half migrated: keys already moved answer ASK, are sent after ASKING, and land."""
    client = redis_client(project, cluster.url)
    pusher = Pusher(project, client)
    tag = uuid.uuid4().hex[:6]
    keys = [f"featsync-{{{tag}}}:{i}" for i in range(50)]  # one hash tag: one slot
    slot = key_slot(keys[0].encode())
    masters = cluster.masters()
    by_port = {port: node for node, port in masters.items()}
    owner_port = client.get_node_from_key(keys[0]).port
    source = by_port[owner_port]
    target = next(n for n in masters if n != source)
    pusher.write(_rows(keys[:20], 1), PushStats("t", 1))
    a, b = redis.Redis(port=owner_port), redis.Redis(port=masters[target])
    b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source)
    a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target)
    try:
        a.execute_command("MIGRATE", "127.0.0.1", masters[target], "", 0, 5000, "KEYS", *keys[:10])
        for version, set_nx in ((2, True), (3, False)):
            stats = PushStats("t", 1)
            pusher._set_nx = set_nx
            pusher.write(_rows(keys, version), stats)
            assert stats.keys_written == 50 and stats.skipped_stale == 0

        def on_target(some: list[str]) -> int:  # the importing node answers only after ASKING
            pipe = b.pipeline(transaction=False)
            for key in some:
                pipe.execute_command("ASKING")
                pipe.exists(key)
            return sum(pipe.execute()[1::2])

        assert on_target(keys[:10]) == 10
        with pytest.raises(redis.exceptions.AskError):  # not on the source any more
            a.get(keys[0])
        assert on_target(keys[20:]) == 30  # absent keys of a migrating slot go to the target
    finally:
        a.execute_command("MIGRATE", "127.0.0.1", masters[target], "", 0, 5000, "KEYS", *keys)
        for node in (a, b):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
    _assert_latest(client, keys, 3)
    for key in keys:
        client.unlink(key)


def test_a_failover_during_a_push_is_followed_or_said_and_a_rerun_converges(project, replicated):  # noqa: F811
    load(USERS, PAIRS, PROFILES)
    client = redis_client(project, replicated.url)
    # Writes going on while a replica takes over its master (CLUSTER FAILOVER): followed.
    writer = Pusher(project, client, chunk_rows=100)
    keys = [f"featsync-cluster-{uuid.uuid4().hex[:6]}:{i}" for i in range(2000)]
    replica = next(p for p in replicated.ports if redis.Redis(port=p).info("replication")["role"] == "slave")
    failover = threading.Thread(target=lambda: redis.Redis(port=replica).execute_command("CLUSTER", "FAILOVER"))
    failover.start()
    promoted = lambda: redis.Redis(port=replica).info("replication")["role"] == "master"  # noqa: E731
    version = _write_rounds(writer, keys, promoted, at_least=2)
    failover.join()
    _assert_latest(client, keys, version)
    # A whole push with a failover between sending and saving its state: either it completes,
    # or it says so clearly; the re-run converges.
    prefix = f"cluster-{uuid.uuid4().hex[:6]}"
    pusher = Pusher(project, redis_client(project, replicated.url), key_prefix=prefix)
    replica = next(p for p in replicated.ports if redis.Redis(port=p).info("replication")["role"] == "slave")

    def fail_over(_stats):  # once, after the first view's first batch was sent
        if redis.Redis(port=replica).info("replication")["role"] == "master":
            return
        redis.Redis(port=replica).execute_command("CLUSTER", "FAILOVER")
        for _ in range(100):
            if redis.Redis(port=replica).info("replication")["role"] == "master":
                return
            time.sleep(0.1)

    try:
        pusher.push(progress=fail_over)
    except FeatsyncError as exc:
        assert "failed over" in str(exc) or "re-run" in str(exc)
    results = Pusher(project, redis_client(project, replicated.url), key_prefix=prefix).push()
    assert {s.feature_view: s.rows_read > 0 for s in results}
    reader = OnlineReader(project.registry(), redis_client(project, replicated.url), prefix)
    rows = [{"user_id": "u1", "merchant_id": "m|2"}]
    response = reader.get(rows, features=["fv_user:amount", "fv_pair:score", "fv_profile:tier"])
    assert response.to_dict() == {"user_id": ["u1"], "merchant_id": ["m|2"], "amount": [2], "score": [1.25], "tier": ["gold"]}


def _async_reads(url: str, keys: list[bytes], until) -> tuple[int, set[int], object]:
    """Read `keys` through the server's cluster client again and again until `until()`, then
    once more; every read must give every key's value (b"v<i>"). Returns (reads, the ids of
    the slot maps the reads went by, the client)."""
    import asyncio

    from featsync.online.connections import async_mget

    async def loop() -> tuple[int, set[int], object]:
        client = async_mget(url, timeout=5)
        reads, maps = 0, set()
        try:
            while not until() or reads == 0:
                assert await client.mget(keys) == [b"v%d" % i for i in range(len(keys))]
                reads += 1
                maps.add(id(client.route.map))
            assert await client.mget(keys) == [b"v%d" % i for i in range(len(keys))]
            return reads, maps, client
        finally:
            await client.aclose()

    return asyncio.run(loop())


def _fill(client: redis.RedisCluster, tag: str, n: int) -> list[bytes]:
    keys = [f"featsync-read-{tag}:{i}".encode() for i in range(n)]
    for i, key in enumerate(keys):
        client.set(key, b"v%d" % i)
    return keys


def test_the_server_reader_follows_a_resharding(project, cluster):  # noqa: F811
    """featsync serve's cluster client (AsyncClusterMget: a pipeline of GETs per master on
    raw asyncio connections) answers every read right while slots move (MOVED, ASK)."""
    from featsync.online.cluster import AsyncClusterMget

    client = redis_client(project, cluster.url)
    keys = _fill(client, uuid.uuid4().hex[:6], 300)
    masters = cluster.masters()
    # Move slots from the master holding most of the keys to another one.
    by_port = {port: node for node, port in masters.items()}
    ports = [client.get_node_from_key(k).port for k in keys]
    source = by_port[max(set(ports), key=ports.count)]
    target = next(n for n in masters if n != source)
    reshard = subprocess.Popen(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{masters[source]}", "--cluster-from", source]
        + ["--cluster-to", target, "--cluster-slots", "1000", "--cluster-yes", "--cluster-pipeline", "5"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        reads, maps, reader = _async_reads(cluster.url, keys, lambda: reshard.poll() is not None)
    finally:
        reshard.wait(timeout=120)
    assert reshard.returncode == 0, reshard.stderr.read()
    assert isinstance(reader, AsyncClusterMget) and reads > 1
    assert len(maps) > 1  # MOVED made the reader read the map again while reading right
    for key in keys:
        client.unlink(key)


def test_reads_follow_moved_with_a_stale_map_and_read_it_again(project, cluster):  # noqa: F811
    """Both readers, given a map where every slot is on the wrong master: MOVED is followed
    key by key (the right answer, no fallback), then the map is read again for the next read."""
    import asyncio

    from featsync.online.cluster import ClusterReader
    from featsync.online.connections import async_mget

    client = redis_client(project, cluster.url)
    keys = _fill(client, uuid.uuid4().hex[:6], 100)
    expected = [b"v%d" % i for i in range(len(keys))]
    sync_reader = ClusterReader(client)
    assert sync_reader.mget(keys) == expected
    sync_reader.route = _wrong_masters(sync_reader.route)
    assert sync_reader.mget(keys) == expected
    assert sync_reader.route.stale
    stale = sync_reader.route
    assert sync_reader.mget(keys) == expected and sync_reader.route is not stale and not sync_reader.route.stale

    async def async_case() -> None:
        reader = async_mget(cluster.url, timeout=5)
        assert await reader.mget(keys) == expected
        reader.route = _wrong_masters(reader.route)
        assert await reader.mget(keys) == expected
        assert reader.route.stale
        stale = reader.route
        assert await reader.mget(keys) == expected and reader.route is not stale and not reader.route.stale
        assert await reader.mget([b"featsync-read-absent"]) == [None]
        await reader.aclose()

    asyncio.run(async_case())
    for key in keys:
        client.unlink(key)


def test_reads_follow_ask_for_a_slot_in_migration(project, cluster):  # noqa: F811
    """A slot half migrated by hand: keys already on the importing master answer ASK on the
    source; both readers send them there after ASKING."""
    import asyncio

    from featsync.online.cluster import ClusterReader
    from featsync.online.connections import async_mget

    client = redis_client(project, cluster.url)
    tag = uuid.uuid4().hex[:6]
    keys = [f"featsync-read-{{{tag}}}:{i}".encode() for i in range(20)]
    for i, key in enumerate(keys):
        client.set(key, b"v%d" % i)
    slot = key_slot(keys[0])
    masters = cluster.masters()
    by_port = {port: node for node, port in masters.items()}
    owner_port = client.get_node_from_key(keys[0]).port
    source = by_port[owner_port]
    target = next(n for n in masters if n != source)
    a, b = redis.Redis(port=owner_port), redis.Redis(port=masters[target])
    expected = [b"v%d" % i for i in range(len(keys))]
    b.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source)
    a.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target)
    try:
        a.execute_command("MIGRATE", "127.0.0.1", masters[target], "", 0, 5000, "KEYS", *keys[:10])
        with pytest.raises(redis.exceptions.AskError):
            a.get(keys[0])
        assert ClusterReader(client).mget(keys) == expected

        async def read() -> list:
            reader = async_mget(cluster.url, timeout=5)
            try:
                return await reader.mget(keys)
            finally:
                await reader.aclose()

        assert asyncio.run(read()) == expected
    finally:
        a.execute_command("MIGRATE", "127.0.0.1", masters[target], "", 0, 5000, "KEYS", *keys[10:])
        for node in (a, b):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
    for key in keys:
        client.unlink(key)


def test_without_cluster_shards_the_map_comes_from_cluster_slots(project, cluster):  # noqa: F811
    """A user whose ACL refuses CLUSTER SHARDS (-cluster|shards, as managed services restrict
    commands): push, the blocking reader and the server's reader read the map from CLUSTER
    SLOTS instead, and everything works."""
    import asyncio

    from featsync.online.cluster import SlotMap, shards_refused
    from featsync.online.connections import async_mget

    load(USERS, PAIRS, PROFILES)
    user, password = f"noshards{uuid.uuid4().hex[:6]}", "pw"
    for port in cluster.ports:
        acl = ("on", f">{password}", "~*", "&*", "+@all", "-cluster|shards")
        redis.Redis(port=port).execute_command("ACL", "SETUSER", user, *acl)
    try:
        url = cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:{password}@")
        client = redis_client(project, url)
        node = redis.Redis(port=cluster.ports[0], username=user, password=password)
        with pytest.raises(redis.ResponseError) as refused:
            node.execute_command("CLUSTER SHARDS")
        assert shards_refused(refused.value)
        slot_map = SlotMap.read(client, lambda host, port: redis.Redis(host=host, port=port, username=user, password=password))
        assert (slot_map.owners >= 0).all() and len(slot_map.nodes) == 3
        prefix = f"cluster-{uuid.uuid4().hex[:6]}"
        pusher = Pusher(project, client, key_prefix=prefix)
        assert sum(s.keys_written for s in pusher.push()) == 7
        reader = OnlineReader(project.registry(), client, prefix)
        rows = [{"user_id": "u1", "merchant_id": "m|2"}]
        assert reader.get(rows, features=["fv_user:amount", "fv_pair:score"]).to_dict() == {
            "user_id": ["u1"],
            "merchant_id": ["m|2"],
            "amount": [2],
            "score": [1.25],
        }
        keys = reader.prepare(reader.plan(["fv_user:amount"], None, False), {"user_id": ["u1"]}, None)[1]

        async def read() -> list:
            fast = async_mget(url, timeout=5)
            try:
                return await fast.mget(keys)
            finally:
                await fast.aclose()

        assert asyncio.run(read()) == client.mget_nonatomic(keys)
    finally:
        for port in cluster.ports:
            redis.Redis(port=port).execute_command("ACL", "DELUSER", user)


@pytest.mark.parametrize("rows", [3, 300], ids=["small", "batch"])
def test_rows_pushed_through_the_python_api_on_a_cluster(pit_duckdb, cluster, rows):
    """FeatureStore.push / RowIngest (also `push --rows` and `featsync stream`) on a Redis Cluster:
    the row path wrote through one node's connection pool, which a cluster client has not
    (AttributeError), or one EVALSHA over keys of many slots. Now the cluster router: one
    script call per hash slot, newest wins, a second, older push is stale."""
    from datetime import UTC, datetime, timedelta

    from featsync.online.ingest import RowIngest

    now = datetime.now(UTC).replace(microsecond=0)
    client = redis_client(pit_duckdb, cluster.url)
    ingest = RowIngest(pit_duckdb, client, f"cluster-rows-{uuid.uuid4().hex[:6]}")
    users = [f"r{i}" for i in range(rows)]
    try:
        newer = [
            {"user_id": u, "event_timestamp": now - timedelta(minutes=5), "amount": i, "label": "new"}
            for i, u in enumerate(users)
        ]
        older = [{**row, "event_timestamp": now - timedelta(minutes=50), "label": "old"} for row in newer]
        assert ingest.push("fv_user", newer).online.keys_written == rows
        result = ingest.push("fv_user", older).online
        assert (result.keys_written, result.skipped_stale) == (0, rows)
        reader = OnlineReader(pit_duckdb.registry(), client, ingest.key_prefix)
        response = reader.get([{"user_id": u} for u in users], ["fv_user:amount", "fv_user:label"])
        assert response.features == {"amount": list(range(rows)), "label": ["new"] * rows}
    finally:
        delete_pushed_keys(pit_duckdb, client, ingest.key_prefix)
