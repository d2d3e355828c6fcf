"""Benchmark: the UI's catalog and feature view pages for a registry of 500 feature views.

    .venv/bin/python bench/ui.py                  # 500 views, 50 services
    .venv/bin/python bench/ui.py --views 2000 --runs 50

A synthetic manifest (the example's user_transaction_features node, copied with other
names, owners, tags and descriptions, and services over them) is loaded as the registry;
every view is pushed (its push state only) under a key prefix of its own in the Redis of
FEATSYNC_BENCH_REDIS_URL, and validated (recorded results). The UI is served in-process
by uvicorn, as `featsync ui` serves it. Measured, each beside its baseline in the same run:

- server time of GET /ui/ (the whole catalog) and of a feature view page, over HTTP on
  loopback, against the same bytes served by the same server as a precomputed response
  (what any page of that size costs);
- the browser's load time of the catalog (Navigation Timing: navigation start to the load
  event, with the CSS and script), in Debian's chromium driven by Playwright, against the
  static copy of the same page and the feature view page (a 16 KiB page: what any page of
  this UI costs on this machine), and the time to filter the 550 rows by one typed word
  (the page lists the first 50 of each kind; the script filters its index of all of them).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis
import redis.asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from featsync.online.state import layout_of
from featsync.project import Project
from featsync.registry import Registry
from featsync.results import save_result
from featsync.ui.app import mount

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
ARGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOAD_MS = "(() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; })()"
FILTER_MS = """() => {
  const q = document.getElementById("q"); q.value = "loyalty";
  const start = performance.now();
  q.dispatchEvent(new Event("input", {bubbles: true}));
  document.body.offsetHeight;
  return performance.now() - start;
}"""
WORDS = ["spend", "risk", "velocity", "basket", "churn", "session", "refund", "device", "geo", "loyalty"]


def synthetic_manifest(example: dict, views: int, services: int) -> dict:
    """`views` copies of the example's user_transaction_features, `services` exposures over them."""
    manifest = copy.deepcopy(example)
    template = next(n for n in example["nodes"].values() if n["name"] == "user_transaction_features")
    parents = example["parent_map"][template["unique_id"]]
    manifest["nodes"] = {
        uid: n for uid, n in example["nodes"].items() if "feature_view" not in n.get("config", {}).get("meta", {})
    }
    manifest["exposures"], manifest["child_map"] = {}, {uid: [] for uid in manifest["nodes"]}
    manifest["parent_map"] = {uid: example["parent_map"].get(uid, []) for uid in manifest["nodes"]}
    names = []
    for i in range(views):
        node = copy.deepcopy(template)
        name = f"{WORDS[i % len(WORDS)]}_features_{i:04d}"
        node.update(name=name, unique_id=f"model.featsync.{name}", relation_name=f'"featsync"."main"."{name}"')
        meta = node["config"]["meta"]["feature_view"]
        meta.update(owner=f"team-{i % 12}@example.com", tags={"domain": WORDS[(i * 7) % len(WORDS)], "tier": str(i % 3)})
        meta["online"] = i % 4 != 0
        node["description"] = f"Synthetic view {i}: {WORDS[i % len(WORDS)]} signals of the user over rolling windows."
        for column in node["columns"].values():
            column["description"] = f"{column['description']} ({WORDS[(i + len(column['name'])) % len(WORDS)]} {i})"
        manifest["nodes"][node["unique_id"]] = node
        manifest["parent_map"][node["unique_id"]] = list(parents)
        manifest["child_map"][node["unique_id"]] = []
        names.append(name)
    for j in range(services):
        chosen = names[j * 7 % views : j * 7 % views + 3] or names[:3]
        uid = f"exposure.featsync.service_{j:03d}_v1"
        manifest["exposures"][uid] = {
            "name": f"service_{j:03d}_v1",
            "unique_id": uid,
            "type": "ml",
            "owner": {"name": "ML team", "email": "ml@example.com"},
            "description": f"Model {j}",
            "original_file_path": "models/features/_feature_services.yml",
            "depends_on": {"nodes": [f"model.featsync.{chosen[0]}"]},
            "config": {
                "meta": {
                    "feature_service": {"name": f"service_{j:03d}", "version": 1, "features": [f"{n}:*" for n in chosen][:1]}
                }
            },
        }
        manifest["child_map"][f"model.featsync.{chosen[0]}"].append(uid)
        manifest["parent_map"][uid] = [f"model.featsync.{chosen[0]}"]
    return manifest


def serve(app: Starlette) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", loop="uvloop", http="httptools"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def timed(http: httpx.Client, path: str, runs: int) -> tuple[float, float, int]:
    """(median ms, p95 ms, bytes) of GET path over `runs` requests after two warm-ups."""
    for _ in range(2):
        http.get(path)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = http.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))], len(response.content)


def browser_load(base: str, paths: list[str], runs: int) -> dict[str, float]:
    """Median Navigation Timing load time (ms) of each path, cache disabled (a cold page each time)."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for path in paths:
            samples = []
            for _ in range(runs):
                context = browser.new_context()  # no cache carried over
                page = context.new_page()
                page.goto(base + path, wait_until="load")
                samples.append(page.evaluate(LOAD_MS))
                context.close()
            out[path] = statistics.median(samples)
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/ui/")
        page.evaluate("new Promise((done) => requestIdleCallback(() => done()))")  # settled: the script parsed its index
        out["filter"] = page.evaluate(FILTER_MS)  # the script's filter over every row, then a layout
        out["filtered_rows"] = page.locator("#count").inner_text()  # "N of M shown; the first K of each kind are listed"
        context.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=500)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--browser-runs", type=int, default=7)
    args = parser.parse_args()

    example = ROOT / "target" / "featsync" / "default" / "manifest.json"
    if not example.exists():
        raise SystemExit("run `make demo` (or `featsync list`) first: the benchmark copies the example's manifest")
    manifest = synthetic_manifest(json.loads(example.read_text()), args.views, args.services)
    start = time.perf_counter()
    registry = Registry.from_manifest(manifest)
    load_s = time.perf_counter() - start

    work = Path(tempfile.mkdtemp(prefix="featsync-bench-ui-"))
    (work / "dbt_project.yml").write_text("name: bench\nversion: '1'\nprofile: bench\n")
    project = Project.open(work, work, "dev")
    url = os.environ.get("FEATSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"featsync-bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    now = datetime.now(UTC).isoformat()
    state_keys = []
    for view in registry.online_views():
        layout = layout_of(registry, view, prefix)
        client.hset(layout.state_key, mapping={"last_push_at": now, "newest_event_time": now, "watermark": now, "mode": "full"})
        state_keys.append(layout.state_key)
    # every view's recorded validation: the demo's result of the view they are copies of
    demo = json.loads((example.parent / "results" / "validate.json").read_text())["views"]["user_transaction_features"]
    save_result(project, "validate", {name: demo for name in registry.feature_views})

    aclient = redis.asyncio.Redis.from_url(url)
    routes = mount(project, registry, lambda: aclient, prefix)
    app = Starlette(routes=routes)
    server, base = serve(app)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            catalog = http.get("/ui/").content
            view_name = next(v.name for v in registry.online_views())
            view_page = http.get(f"/ui/views/{view_name}").content
            app.router.routes.append(Route("/static-catalog", lambda r: Response(catalog, media_type="text/html")))
            app.router.routes.append(Route("/static-view", lambda r: Response(view_page, media_type="text/html")))
            figures = {
                "catalog": timed(http, "/ui/", args.runs),
                "catalog (static copy)": timed(http, "/static-catalog", args.runs),
                "feature view": timed(http, f"/ui/views/{view_name}", args.runs),
                "feature view (static copy)": timed(http, "/static-view", args.runs),
                "health": timed(http, "/ui/health", args.runs),
            }
        browser = browser_load(base, ["/ui/", "/static-catalog", f"/ui/views/{view_name}"], args.browser_runs)
    finally:
        server.should_exit = True
        if state_keys:
            client.delete(*state_keys)

    print(f"registry: {len(registry.feature_views)} feature views, {len(registry.services)} services (loaded in {load_s:.2f} s)")
    print(f"{'page':<28}{'median ms':>10}{'p95 ms':>9}{'KiB':>8}")
    for name, (median, p95, size) in figures.items():
        print(f"{name:<28}{median:>10.1f}{p95:>9.1f}{size / 1024:>8.0f}")
    ratio = figures["catalog"][0] / figures["catalog (static copy)"][0]
    print(f"catalog server time / static copy: {ratio:.1f}x")
    print("browser (Navigation Timing, start to load event, cold cache, median):")
    print(
        f"  catalog {browser['/ui/']:.0f} ms; static copy {browser['/static-catalog']:.0f} ms "
        f"({browser['/ui/'] / browser['/static-catalog']:.2f}x); feature view {browser[f'/ui/views/{view_name}']:.0f} ms"
    )
    print(
        f"  typing one word filters {args.views + args.services} rows in {browser['filter']:.0f} ms ({browser['filtered_rows']})"
    )


if __name__ == "__main__":
    main()
