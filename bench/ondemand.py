"""Benchmark: what on-demand features add to an in-process online read, measured in one run.

    .venv/bin/python bench/ondemand.py [--requests 20000]
    FEATSYNC_BENCH_REDIS_URL=redis://host:port/0 ... (default redis://127.0.0.1:6379/0)

Builds a scratch copy of the example project on DuckDB (shifted to end yesterday, as
`make demo` does), pushes it to Redis under a unique prefix, then times, for one entity
(user x merchant):

- baseline: `OnlineReader.get` of fraud_detection v2's nine stored features by name;
- the service with its two on-demand features and `request_data` (validated, typed,
  evaluated);
- the on-demand step alone (prepare + evaluate of both features on an already-read row).

Keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import redis

from featsync.online.push import Pusher
from featsync.online.serving import OnDemandPlan, OnlineReader
from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent


def percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1e3
    p99 = samples[int(len(samples) * 0.99)] * 1e3
    return f"p50 {p50:.3f} ms   p99 {p99:.3f} ms"


def timed(fn, n: int) -> list[float]:
    for _ in range(min(1000, n)):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    tmp = Path(tempfile.mkdtemp(prefix="featsync-bench-ondemand-"))
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy(ROOT / name, tmp / name)
    for name in ("models", "macros", "package", "seeds", "snapshots"):
        shutil.copytree(ROOT / name, tmp / name)
    os.environ["FEATSYNC_DUCKDB_PATH"] = str(tmp / "featsync.duckdb")
    os.environ.setdefault("DBT_LOG_PATH", str(tmp / "logs"))
    client = redis.Redis.from_url(url)
    prefix = f"bench-ondemand-{uuid.uuid4().hex[:8]}"
    try:
        project = Project.open(tmp, tmp, "dev")
        shift = (datetime.now(UTC).date() - date(2024, 4, 30)).days
        build = ["build", "--exclude", "resource_type:test", "resource_type:unit_test"]
        project.run_dbt([*build, "--vars", json.dumps({"featsync_example_shift_days": shift})])
        Pusher(project, client, key_prefix=prefix).push()
        registry = project.registry()
        service = registry.service("fraud_detection:v2")
        reader = OnlineReader(registry, client, prefix)
        row = [{"user_id": "u0137", "merchant_id": "m0035"}]
        names = [str(ref) for ref in service.features]
        request = {"transaction_amount": 500.0, "event_timestamp": datetime.now(UTC)}
        response = reader.get(row, feature_service="fraud_detection:v2", request_data=request)
        print("one response:", {k: v[0] for k, v in response.to_dict().items()})
        plan = OnDemandPlan.build(service, False)

        def on_demand_only() -> None:
            plan.apply(response, plan.prepare(request, 1), 1)

        n = args.requests
        print(f"{n} requests each, one entity, 4 feature views, local Redis (shared 2-core box)")
        print(f"  baseline: 9 stored features by name            {percentiles(timed(lambda: reader.get(row, names), n))}")
        print(
            "  fraud_detection:v2 + 2 on-demand, request_data  "
            + percentiles(timed(lambda: reader.get(row, feature_service="fraud_detection:v2", request_data=request), n))
        )
        print(f"  on-demand step alone (prepare + evaluate)      {percentiles(timed(on_demand_only, n))}")
    finally:
        pusher = Pusher(project, client, key_prefix=prefix)
        keys = [key for pattern in pusher.key_patterns() for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            client.delete(*keys)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
