"""featsync ui: the pages, in a real browser (Debian's chromium driven by Playwright) and over HTTP.

The example project (built once on DuckDB) is pushed to the real Redis under a key prefix of
its own, validated and drift-checked (which records the results the pages show), then served
by the real server app with the UI in a thread of this process: that lets the stale-view test
move the clock (FEATSYNC_NOW) between two page loads. `featsync ui` itself is started as a
process once. Screenshots go to target/test-artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from conftest import ROOT, copy_project, delete_pushed_keys, missing_service
from featsync.monitoring import drift as drift_lib
from featsync.online.push import Pusher
from featsync.online.server import ServeConfig, create_app
from featsync.project import Project
from featsync.quality import validate as quality
from featsync.results import view_results
from test_push import free_port

CHROMIUM = os.environ.get("FEATSYNC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "target" / "test-artifacts" / "ui"
FRESH = "2024-05-01T00:00:00Z"  # two days after the example's last event
STALE = "2024-08-15T00:00:00Z"  # user_transaction_features' newest event is > 90d (its ttl, so max_staleness) old
PUSHED_AT = datetime(2024, 4, 30, tzinfo=UTC).timestamp()  # push's clock: the 2024 rows are live


@pytest.fixture(scope="module")
def example(duckdb_build, redis_url, tmp_path_factory):
    """A copy of the example project on the shared DuckDB build: pushed, validated, drift-checked."""
    root = copy_project(tmp_path_factory.mktemp("ui") / "example")
    project = Project.open(root, None, "dev")
    client = redis.Redis.from_url(redis_url)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    Pusher(project, client, key_prefix=prefix, now=lambda: PUSHED_AT).push(
        ["user_transaction_features", "merchant_risk_features"]
    )
    quality.validate(project, now="2024-04-30T00:00:00Z")
    reference = drift_lib.Window.parse("2024-01-01T00:00:00Z..2024-02-01T00:00:00Z")
    current = drift_lib.Window.parse("2024-04-01T00:00:00Z..2024-04-30T00:00:00Z")
    drift_lib.drift(project, "user_transaction_features", reference, current)
    yield project, prefix, duckdb_build
    delete_pushed_keys(project, client, prefix)


@pytest.fixture(scope="module")
def ui(example, redis_url):
    """The server app with the UI, in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    project, prefix, build = example
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEATSYNC_NOW", FRESH)
        # The build's compiled SQL, from a copy of its manifest: other tests' `dbt compile --inline`
        # into the shared build's target path rewrite manifest.json without the models' code.
        artifacts = project.project_dir / "build-artifacts"
        artifacts.mkdir()
        shutil.copy(build.target_path / "manifest.json", artifacts / "manifest.json")
        mp.setenv("DBT_TARGET_PATH", str(artifacts))
        config = ServeConfig(str(project.project_dir), str(project.profiles_dir), "dev", redis_url, prefix, ui=True)
        app = create_app(config)
        mp.delenv("DBT_TARGET_PATH")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the UI server did not start"
        yield f"http://127.0.0.1:{server.config.port}", mp
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        missing_service("Debian's chromium (`make browser` installs it)", FileNotFoundError(CHROMIUM))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui):
    """A fresh page; every request it makes is recorded (the UI must fetch nothing off this server)."""
    base, _ = ui
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=base)
    page = context.new_page()
    page.requests = []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def visible_rows(page, kind: str) -> list[str]:
    return page.locator(f"table.catalog[data-kind={kind}] tbody tr:visible th a").all_inner_texts()


# -- in the browser ---------------------------------------------------------------------------


def test_catalog_search_by_a_word_of_a_feature_description(page, ui):
    base, _ = ui
    page.goto("/ui/")
    assert page.title().startswith("Catalog")
    views = visible_rows(page, "feature_view")
    assert views == sorted(views) and len(views) == 6 and "user_transaction_features" in views
    assert visible_rows(page, "feature_service") == ["fraud_detection"] * 3
    shot(page, "catalog")

    # "Largest transaction in the last 30 days." describes amount_max_30d only; v2 and v3 use it, v1 does not.
    page.get_by_label("Search").fill("largest")
    assert visible_rows(page, "feature_view") == ["user_transaction_features"]
    services = page.locator("table.catalog[data-kind=feature_service] tbody tr:visible td:nth-child(2)").all_inner_texts()
    assert services == ["v2", "v3"]
    assert page.locator("#count").inner_text() == "3 of 9 shown"
    assert "q=largest" in page.url  # the filter is in the address: shareable, and the server applies it too
    shot(page, "catalog-search")

    page.get_by_label("Search").fill("")
    page.get_by_label("Entity").select_option("merchant_id")
    assert visible_rows(page, "feature_view") == ["merchant_profile_features", "merchant_risk_features", "user_merchant_features"]
    page.get_by_label("Entity").select_option("")
    page.get_by_label("Tag").select_option("pii")
    assert visible_rows(page, "feature_view") == ["user_transaction_features"]
    assert all(url.startswith(base) for url in page.requests), page.requests


def test_feature_view_page_lineage_validation_and_snippets(page, ui):
    base, _ = ui
    page.goto("/ui/?q=largest")  # the server applies the filter without the script
    page.get_by_role("link", name="user_transaction_features").click()
    page.wait_for_url("**/ui/views/user_transaction_features")
    assert page.get_by_role("heading", level=1).inner_text().startswith("user_transaction_features")

    # Lineage: the graph's boxes, upstream (seed -> staging model) and downstream (training sets, services)
    graph = page.locator("svg.lineage")
    assert graph.get_attribute("role") == "img"
    names = set(graph.locator(".node").evaluate_all("nodes => nodes.map(n => n.dataset.name)"))
    assert {"raw_transactions", "stg_transactions", "user_transaction_features"} <= names
    assert {"fraud_training_set_v1", "fraud_training_set_v2", "fraud_detection_v1", "fraud_detection_v2"} <= names
    assert graph.locator("path.edge").count() >= 6
    page.locator("svg.lineage a.node[data-name=fraud_detection_v1]").focus()  # links in the graph take the keyboard
    assert page.evaluate("document.activeElement.dataset.name") == "fraud_detection_v1"

    # Validation: one row per expectation of the suite, each with its result and observed value
    rows = page.locator("table.validation tbody tr")
    assert rows.count() == 17
    assert page.locator("table.validation tbody tr.pass").count() == 17
    max_row = rows.filter(has_text="expect_column_max_to_be_between")
    assert "2024-04-29" in max_row.locator("td").nth(3).inner_text()  # the observed newest event time

    # Online state: pushed, fresh at FEATSYNC_NOW=2024-05-01
    assert page.locator("#online [data-freshness]").inner_text() == "fresh"
    # Snippets: the Python online read and the dbt training-set macro name this view's features
    online = page.locator("#snippet-online").inner_text()
    assert "store.get_online_features(" in online and '"user_transaction_features:amount_max_30d"' in online
    training = page.locator("#snippet-training").inner_text()
    assert "featsync.point_in_time_join(" in training and "'user_transaction_features:transaction_count_7d'" in training
    # SQL: compiled (from the build's artifacts, same checksum) and raw
    compiled = page.locator("pre.sql.compiled").inner_text()
    assert "{{" not in compiled and '"main"."stg_transactions"' in compiled
    assert "ref('stg_transactions')" in page.locator("pre.sql.raw").text_content()
    # Drift: the recorded report, embedded
    frame = page.frame_locator("iframe.drift")
    assert frame.locator("h1").inner_text() == "Drift of user_transaction_features"
    shot(page, "feature-view")
    assert all(url.startswith(base) for url in page.requests), page.requests


def test_a_view_goes_stale_when_the_clock_passes_its_threshold(page, ui):
    _, env = ui
    page.goto("/ui/health")
    row = page.locator("table.health tr[data-view=user_transaction_features]")
    assert row.get_attribute("data-freshness") == "fresh"
    assert (
        page.locator("table.health tr[data-view=user_merchant_features]").get_attribute("data-freshness") == "stale"
    )  # never pushed
    shot(page, "health-fresh")
    env.setenv("FEATSYNC_NOW", STALE)
    try:
        page.reload()
        assert row.get_attribute("data-freshness") == "stale"
        assert "max_staleness 90d" in row.inner_text()
        shot(page, "health-stale")
        page.goto("/ui/views/user_transaction_features")
        assert page.locator("#online [data-freshness]").inner_text() == "stale"
    finally:
        env.setenv("FEATSYNC_NOW", FRESH)


def test_keyboard_and_semantics(page):
    page.goto("/ui/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # every form control has a label, every table header a scope, one h1, the nav is a landmark
    unlabeled = page.evaluate(
        "Array.from(document.querySelectorAll('input, select')).filter(e => !e.labels || !e.labels.length).length"
    )
    assert unlabeled == 0
    assert page.locator("th:not([scope])").count() == 0
    assert page.locator("h1").count() == 1 and page.locator("nav[aria-label=Main]").count() == 1
    # the search field is reachable with Tab and filters as one types
    page.locator("#q").focus()
    page.keyboard.type("merchant_profile")
    assert visible_rows(page, "feature_view") == ["merchant_profile_features"]


def test_service_page_lists_features_versions_and_owner(page):
    page.goto("/ui/services/fraud_detection_v2")
    assert page.get_by_role("heading", level=1).inner_text().startswith("fraud_detection")
    text = page.locator("main").inner_text()
    assert "risk-team@example.com" in text and "Risk team" in text
    assert page.get_by_role("link", name="v1", exact=True).get_attribute("href").endswith("/ui/services/fraud_detection_v1")
    for view in ("user_transaction_features", "merchant_risk_features", "user_merchant_features", "merchant_profile_features"):
        assert page.get_by_role("link", name=view).count() == 1
    assert "amount_vs_avg_ratio" in text and "fraud_training_set_v2" in text
    shot(page, "feature-service")


# -- over HTTP ---------------------------------------------------------------------------------


def test_pages_without_a_browser(ui):
    base, _ = ui
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/", follow_redirects=False).headers["location"] == "/ui/"
        catalog = http.get("/ui/?q=largest")
        assert catalog.status_code == 200 and "default-src 'self'" in catalog.headers["content-security-policy"]
        listed = re.findall(r'<tr data-key="([^"]+)">', catalog.text)
        assert listed == ["user_transaction_features", "fraud_detection_v2", "fraud_detection_v3"]  # the server filters too
        assert http.get("/ui/views/nope").status_code == 404
        assert http.get("/ui/drift/merchant_risk_features").status_code == 404  # never drift-checked
        assert http.get("/ui/static/ui.js").status_code == 200
        keys = http.get("/ui/views/merchant_risk_features?count_keys=1").text
        assert re.search(r"<span data-keys>\d+</span>", keys)


def test_a_large_catalog_lists_a_page_of_each_kind_and_the_script_filters_them_all(example, browser):
    """The catalog lists the first rows of each kind (a light page for hundreds of views), links to
    all of them, and its script filters every row of the registry, not only those listed."""
    import uvicorn
    from starlette.applications import Starlette

    from featsync.ui.app import mount

    project, prefix, _ = example
    registry = project.registry()
    app = Starlette(routes=mount(project, registry, lambda: None, prefix, catalog_rows=2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.config.port}"
    try:
        first = httpx.get(f"{base}/ui/").text
        views = sorted(registry.feature_views)
        assert re.findall(r'<tr data-key="([^"]+)">', first) == [*views[:2], "fraud_detection_v1", "fraud_detection_v2"]
        assert "9 of 9 shown; the first 2 of each kind are listed" in first
        assert f'<a href="/ui/?all=1">List all {len(views)} matching feature views</a>' in first
        assert re.findall(r'<tr data-key="([^"]+)">', httpx.get(f"{base}/ui/?all=1").text)[: len(views)] == views
        merchant = httpx.get(f"{base}/ui/?entity=merchant_id").text
        assert '<a href="/ui/?entity=merchant_id&amp;all=1">List all 3 matching feature views</a>' in merchant

        context = browser.new_context(base_url=base)
        page = context.new_page()
        page.goto("/ui/")
        page.get_by_label("Search").fill("merchant_profile")  # a view the page did not list
        assert visible_rows(page, "feature_view") == ["merchant_profile_features"]
        assert page.locator("p.more[data-more=feature_view]").is_hidden()
        page.get_by_label("Search").fill("")
        assert visible_rows(page, "feature_view") == views[:2]
        assert page.locator("#count").inner_text() == "9 of 9 shown; the first 2 of each kind are listed"
        page.get_by_role("link", name=f"List all {len(views)} matching feature views").click()
        page.wait_for_url("**/ui/?all=1")
        assert visible_rows(page, "feature_view") == views
        page.get_by_label("Entity").select_option("merchant_id")  # after ?all=1 the script lists every match
        assert len(visible_rows(page, "feature_view")) == 3 and "all=1" in page.url
        context.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_page_that_raises_is_a_counted_500_page_or_json(ui, monkeypatch):
    """A bug in a page: an HTML page for a browser, the API's JSON 500 for a client (it was
    Starlette's text/plain), counted in /metrics by kind; never the traceback."""
    from featsync.ui import pages

    def broken(*args, **kwargs):
        raise ZeroDivisionError("the bug")

    monkeypatch.setattr(pages, "service_page", broken)  # the app looks it up per request
    base, _ = ui
    message = "internal server error (ZeroDivisionError); the server's log has the details"
    with httpx.Client(base_url=base, timeout=10) as http:
        page = http.get("/ui/services/fraud_detection_v2", headers={"accept": "text/html"})
        assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
        assert "<h1>Server error</h1>" in page.text and "internal server error (ZeroDivisionError)" in page.text
        assert "the bug" not in page.text
        api = http.get("/ui/services/fraud_detection_v2", headers={"accept": "application/json"})
        assert api.status_code == 500 and api.headers["content-type"] == "application/json"
        assert api.json() == {"detail": message, "module": "feast.errors", "class": "FeastError", "message": message}
        deadline = time.monotonic() + 10  # counted by the guard once Starlette has answered and re-raised
        while 'featsync_errors_total{endpoint="/ui",kind="ZeroDivisionError"} 2.0' not in (text := http.get("/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)


def test_metrics_gauges_per_feature_view(ui, example, redis_url):
    base, _ = ui
    project, prefix, _ = example
    text = httpx.get(f"{base}/metrics", timeout=10).text
    gauges = {
        (name, view): float(value)
        for name, view, value in re.findall(r'^(featsync_feature_view_\w+)\{feature_view="(\w+)"\} (\S+)$', text, re.M)
    }
    # push recorded the newest event time it wrote; validation observed the table's newest: the same instant
    state = Pusher(project, redis.Redis.from_url(redis_url), key_prefix=prefix).state(
        project.registry().feature_view("user_transaction_features")
    )
    newest = datetime.fromisoformat(state["newest_event_time"])
    (observed,) = [
        r["observed_value"]
        for r in view_results(project, "validate")["user_transaction_features"]["results"]
        if r["expectation"] == "expect_column_max_to_be_between" and r["column"] == "event_timestamp"
    ]
    assert newest == datetime.fromisoformat(observed).replace(tzinfo=UTC)
    expected = datetime.fromisoformat(FRESH.replace("Z", "+00:00")) - newest
    assert gauges["featsync_feature_view_freshness_seconds", "user_transaction_features"] == expected.total_seconds()
    assert ("featsync_feature_view_freshness_seconds", "user_merchant_features") not in gauges  # never pushed here
    # recorded by push's own clock (a last push after now would be a breach, with no gauge)
    assert gauges["featsync_feature_view_last_push_timestamp_seconds", "merchant_risk_features"] == PUSHED_AT
    assert all(gauges["featsync_feature_view_validation_failures", v] == 0 for v in project.registry().feature_views)


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("0001-01-01T00:00:00+01:00", "push state field 'newest_event_time' is not a time"),  # before the year 1 in UTC
        ("2026-13-45T99:99:99.999999+00:00", "push state field 'newest_event_time' is not a time"),
        ("garbage", "push state field 'newest_event_time' is not a time: 'garbage'"),
        (None, "is not a hash: something other than featsync wrote that key"),  # WRONGTYPE
    ],
)
def test_a_hostile_push_state_shows_as_a_breach_never_a_500(ui, example, redis_url, stored, shown):
    """Anyone who can write fs:* can write the push state: a newest_event_time that is not a time
    (one that leaves the years 1 to 9999 once in UTC used to raise OverflowError: /metrics and
    these pages answered 500), or a state key that is not a hash, shows as a breach naming it;
    the view's freshness gauge is left out, the other views' stay."""
    base, _ = ui
    project, prefix, _ = example
    client = redis.Redis.from_url(redis_url)
    pusher = Pusher(project, client, key_prefix=prefix)
    key = pusher.state_key(project.registry().feature_view("merchant_risk_features"))
    saved = client.hgetall(key)
    try:
        if stored is None:
            client.delete(key)
            client.set(key, "not a hash")
        else:
            client.hset(key, "newest_event_time", stored)
        with httpx.Client(base_url=base, timeout=10) as http:
            metrics = http.get("/metrics")
            assert metrics.status_code == 200, metrics.text
            assert 'freshness_seconds{feature_view="merchant_risk_features"}' not in metrics.text
            assert 'freshness_seconds{feature_view="user_transaction_features"}' in metrics.text
            health = http.get("/ui/health")
            assert health.status_code == 200, health.text
            row = re.search(r'<tr data-view="merchant_risk_features".*?</tr>', health.text, re.S)[0]
            assert 'data-freshness="stale"' in row and shown in row.replace("&#39;", "'"), row
            page = http.get("/ui/views/merchant_risk_features")
            assert page.status_code == 200 and shown in page.text.replace("&#39;", "'")
    finally:
        client.delete(key)
        client.hset(key, mapping=saved)


# -- the real command ---------------------------------------------------------------------------


def test_featsync_ui_command_serves_the_pages_with_json_access_logs(example, redis_url, tmp_path):
    project, prefix, _ = example
    port = free_port()
    args = [sys.executable, "-m", "featsync", "ui", "--project-dir", str(project.project_dir), "--target", "dev"]
    args += ["--redis-url", redis_url, "--key-prefix", prefix, "--port", str(port), "--access-log", "--log-format", "json"]
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = httpx.get(f"{base}/ui/views/merchant_risk_features", timeout=5)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.2)
            assert response.status_code == 200 and "chargeback_rate_30d" in response.text
        finally:
            proc.terminate()
            proc.wait(30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "featsync.access"]
    assert access and access[0]["path"] == "/ui/views/merchant_risk_features" and access[0]["status"] == 200
    assert {"time", "level", "logger", "message", "method", "duration_ms"} <= set(access[0])
    assert any("Uvicorn running on" in line["message"] for line in lines)  # uvicorn's own lines, as JSON too


def test_static_assets_ship_in_the_wheel(tmp_path):
    """package-data: a wheel built from the tree carries the templates and assets (the pages work offline)."""
    tree = tmp_path / "tree"  # a copy: building in place would leave build/ and egg-info in the checkout
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "sync", tree / "sync", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(tree)],
        check=True,
        capture_output=True,
    )
    import zipfile

    (wheel,) = tmp_path.glob("featsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("ui.css", "ui.js", "favicon.svg"):
        assert f"featsync/ui/static/{asset}" in names
    for template in ("base.html", "catalog.html", "view.html", "service.html", "health.html", "login.html"):
        assert f"featsync/ui/templates/{template}" in names


def test_a_server_token_guards_every_page_and_a_browser_signs_in_once(example):
    """With a bearer token, the pages need it: a header (scripts) or the cookie /ui/login sets (browsers)."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from featsync.ui.app import mount

    project, prefix, _ = example
    app = Starlette(routes=mount(project, project.registry(), lambda: None, prefix, token="s3cret-token"))
    html = {"accept": "text/html"}
    with TestClient(app, base_url="http://127.0.0.1") as http:
        page = http.get("/ui/services/fraud_detection_v1", headers=html, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui/services/fraud_detection_v1"
        assert http.get("/ui/", follow_redirects=False).status_code == 401  # a script gets 401, not a form
        assert http.get("/ui/", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/ui/", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        assert http.get("/ui/static/ui.css").status_code == 200  # the login page needs its style
        wrong = http.post("/ui/login?next=/ui/health", data={"token": "guess"}, headers=html)
        assert wrong.status_code == 401 and "not the server" in wrong.text and "set-cookie" not in wrong.headers
        signed = http.post(
            "/ui/login?next=/ui/services/fraud_detection_v1", data={"token": "s3cret-token"}, follow_redirects=False
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/services/fraud_detection_v1"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert http.get("/ui/services/fraud_detection_v1", headers=html).status_code == 200  # the cookie, from now on
        off_site = http.post("/ui/login?next=https://elsewhere.example/", data={"token": "s3cret-token"}, follow_redirects=False)
        assert off_site.headers["location"] == "/ui/"  # never sent off this UI


@pytest.mark.parametrize("token", ["Zm9v/YmF6+cXV4=", 'a;b,c"d\\e f=%41'])
def test_a_browser_signs_in_with_a_token_a_cookie_cannot_hold_raw(example, token):
    """A token with / + = (any base64 token) or ; , " \\ space was set as a quoted cookie
    ("Zm9v/YmF6+cXV4=") that was read back with its quotes: every page sent the browser back to
    the login, forever. The cookie holds it percent-encoded now, and is read back decoded."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from featsync.online.auth import cookie_value
    from featsync.ui.app import mount

    project, prefix, _ = example
    app = Starlette(routes=mount(project, project.registry(), lambda: None, prefix, token=token))
    html = {"accept": "text/html"}
    with TestClient(app, base_url="http://127.0.0.1") as http:
        signed = http.post("/ui/login?next=/ui/", data={"token": token}, headers=html, follow_redirects=False)
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/"
        assert '"' not in signed.headers["set-cookie"].split(";")[0]  # a value a cookie holds unquoted
        page = http.get("/ui/services/fraud_detection_v1", headers=html, follow_redirects=False)
        assert page.status_code == 200, page.headers.get("location")
        wrong = token[:-1] + ("x" if token[-1] != "x" else "y")
        http.cookies.clear()
        for value in (cookie_value(wrong), cookie_value(token)):
            page = http.get("/ui/", headers={**html, "cookie": f"featsync_token={value}"}, follow_redirects=False)
            assert page.status_code == (303 if value != cookie_value(token) else 200)


def test_an_exposure_url_becomes_a_link_only_when_it_is_http(example):
    """`url: "javascript:alert(document.cookie)"` on an exposure was a clickable link on the
    service page (run in the UI's origin when clicked): only http(s) URLs are links now, any
    other is shown as text."""
    from html import escape

    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from featsync.ui.app import mount

    project, prefix, _ = example
    registry = project.registry()
    exposure = registry.manifest["exposures"][registry.service("fraud_detection_v1").unique_id]
    saved = exposure.get("url")
    cases = {
        "javascript:alert(document.cookie)": False,
        "JaVaScRiPt:alert(1)": False,
        " javascript:alert(1)": False,
        "data:text/html,<script>alert(1)</script>": False,
        "https://models.example/fraud?v=1&x=2": True,
        "HTTP://models.example/": True,
    }
    try:
        for url, linked in cases.items():
            exposure["url"] = url
            app = Starlette(routes=mount(project, registry, lambda: None, prefix))
            with TestClient(app, base_url="http://127.0.0.1") as http:
                page = http.get("/ui/services/fraud_detection_v1")
            assert page.status_code == 200
            assert (f'href="{escape(url)}"' in page.text) is linked, url
            assert escape(url, quote=False) in page.text  # shown either way
    finally:
        exposure["url"] = saved


def test_results_show_only_for_the_version_and_store_they_were_about(example, redis_url):
    """Results were keyed by view name only: a verify of another key prefix showed as this
    server's skew, and after a version bump v1's validation showed as v2's (/metrics said 0
    failures for a version never validated). Each result records what it was about now."""
    import dataclasses

    import redis.asyncio
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from featsync.monitoring import verify as verify_lib
    from featsync.online.metrics import view_gauges
    from featsync.results import ResultCache, online_store
    from featsync.ui import pages
    from featsync.ui.app import mount

    project, prefix, _ = example
    registry = project.registry()
    name = "user_transaction_features"
    view = registry.feature_views[name]
    sync_client = redis.Redis.from_url(redis_url)
    other = f"featsync-test-{uuid.uuid4().hex[:8]}"  # nothing pushed there: every entity missing online
    verify_lib.verify(project, sync_client, other, [name], sample=5)
    assert view_results(project, "verify")[name]["about"] == {
        "version": view.version,
        "key_prefix": other,
        "redis": online_store(registry, sync_client, other)["redis"],
    }
    assert "***" not in json.dumps(view_results(project, "verify")[name]["about"])

    def health(served_prefix: str) -> str:
        client = redis.asyncio.Redis.from_url(redis_url)
        app = Starlette(routes=mount(project, registry, lambda: client, served_prefix))
        with TestClient(app, base_url="http://127.0.0.1") as http:
            page = http.get("/ui/health")
        assert page.status_code == 200
        return re.search(rf'<tr[^>]*data-view="{name}".*?</tr>', page.text, re.S).group(0)

    assert "verify not run" in health(prefix)  # recorded against another key prefix
    assert "verify not run" not in health(other)
    verify_lib.verify(project, sync_client, prefix, [name], sample=5)
    assert "verify not run" not in health(prefix)

    # A version bump: v1's validation is not v2's, on the health page and in /metrics.
    bumped_view = dataclasses.replace(view, version=view.version + 1)
    bumped = dataclasses.replace(registry, feature_views={**registry.feature_views, name: bumped_view})
    cache = ResultCache(project)
    now = datetime.now(UTC)
    assert cache.current("validate", view) is not None and cache.current("validate", bumped_view) is None
    (row,) = [r for r in pages.health_rows(bumped, None, now, cache) if r.view.name == name]
    assert row.validation is None
    gauge = f'featsync_feature_view_validation_failures{{feature_view="{name}"}}'
    assert gauge in view_gauges(registry, None, now, cache).decode()
    assert gauge not in view_gauges(bumped, None, now, cache).decode()


def test_the_catalog_index_cannot_close_its_script_element():
    """The JSON index rides inside <script>: no text of a description may end it early."""
    from featsync.ui.pages import CatalogRow, catalog_index

    row = CatalogRow("feature_view", "v", "v", 1, "ends </script><script>alert(1)</script> <!--", ("e",), (), (), "", True, 1)
    index = catalog_index([row])
    assert "<" not in index and json.loads(index)[0][11] == row.description
