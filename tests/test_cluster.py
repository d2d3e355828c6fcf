"""featsync against a real 3-master Redis Cluster started by the tests on loopback ports."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest
import redis

from featsync.errors import FeatsyncError
from featsync.online.connections import redis_client
from featsync.online.push import Pusher
from featsync.online.serving import OnlineReader
from test_push import PAIRS, PROFILES, USERS, load, project  # noqa: F401 (fixture)


def cluster_port() -> int:
    """A free port p whose cluster bus port p + 10000 is free too (and below 65536)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class Cluster:
    def __init__(self, workdir):
        self.workdir = workdir
        self.ports = [cluster_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

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
    for port in c.ports:
        c.start_node(port)
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in c.ports), "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    c.wait_ok()
    yield c
    for port in c.ports:
        if c.procs[port].poll() is None:
            c.kill(port)


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
    (incremental,) = pusher.push(["fv_user"])
    assert not incremental.full_refresh and incremental.rows_read == 1
    # The keys really are spread over the masters.
    per_node = [redis.Redis(port=p).dbsize() for p in cluster.ports]
    assert sum(per_node) >= 7 and sum(1 for n in per_node if n) >= 2


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
