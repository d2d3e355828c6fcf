"""featsync drift, status and verify against real DuckDB, PostgreSQL and Redis.

Drift: a known shift is injected into one window and must be flagged, the same
distribution must not. Status and verify: a clean push is fresh and consistent; changing
the warehouse without pushing is seen, by status (lag, pending rows) and by verify
(mismatches with examples).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import redis
from click.testing import CliRunner

from conftest import delete_pushed_keys
from featsync.cli import main
from featsync.errors import CHECK_FAILED_EXIT, USAGE_EXIT, DeclarationError, FeatsyncError, NotFoundError, UsageError
from featsync.monitoring import drift as drift_lib
from featsync.monitoring import status as mstatus
from featsync.monitoring import verify as monitor_verify
from featsync.monitoring.freshness import online_freshness
from featsync.online.push import Pusher
from featsync.registry import Registry
from featsync.results import view_results

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
H = timedelta(hours=1)
REFERENCE = "2024-01-01T00:00:00Z..2024-01-15T00:00:00Z"
SAME = "2024-01-15T00:00:00Z..2024-01-29T00:00:00Z"  # drawn from the reference's distribution
SHIFTED = "2024-02-01T00:00:00Z..2024-02-15T00:00:00Z"  # amount +25%, labels reshuffled, 20% NULL labels


def window_rows(start: datetime, n: int, seed: int, shifted: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    times = [start + timedelta(seconds=int(s)) for s in rng.integers(0, 14 * 86400, n)]
    mean, shares = (125.0, [0.2, 0.3, 0.5]) if shifted else (100.0, [0.5, 0.3, 0.2])
    labels = rng.choice(["a", "b", "c"], size=n, p=shares).astype(object)
    if shifted:
        labels[rng.random(n) < 0.2] = None
    return pa.table(
        {
            "user_id": [f"d{seed}-{i}" for i in range(n)],
            "event_timestamp": pa.array(times, pa.timestamp("us")),
            "created_timestamp": pa.array([None] * n, pa.timestamp("us")),
            "amount": rng.normal(mean, 20.0, n).round().astype(np.int64),
            "label": pa.array(labels.tolist(), pa.string()),
        }
    )


def duck(sql: str, params=None) -> None:
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        con.execute(sql, params or [])


@pytest.fixture(scope="module")
def project(pit_duckdb):
    return pit_duckdb


@pytest.fixture(scope="module")
def drift_data(project):
    rows = pa.concat_tables(
        [
            window_rows(datetime(2024, 1, 1), 3000, 1, False),
            window_rows(datetime(2024, 1, 15), 3000, 2, False),
            window_rows(datetime(2024, 2, 1), 3000, 3, True),
        ]
    )
    with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
        con.execute("delete from user_rows")
        con.register("drift_rows", rows)
        con.execute("insert into user_rows select * from drift_rows")
    return project


def run(project, *args: str):
    return CliRunner().invoke(main, [*args, "--project-dir", str(project.project_dir), "--target", "duckdb"])


# -- drift ------------------------------------------------------------------------------


def test_a_known_shift_is_detected_and_ranked_first(drift_data):
    report = drift_lib.drift(drift_data, "fv_user", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SHIFTED))
    # recorded for the UI, with what it needs to draw the same HTML report again
    recorded = view_results(drift_data, "drift")["fv_user"]
    assert recorded["breached"] and recorded["current"] == SHIFTED
    assert drift_lib.html_report(drift_lib.DriftReport.from_dict(recorded)) == drift_lib.html_report(report)
    by_name = {f.feature: f for f in report.features}
    amount, label = by_name["amount"], by_name["label"]
    assert report.breached and report.reference_rows == report.current_rows == 3000
    assert amount.kind == "numeric" and amount.ks_statistic > 0.4 and amount.ks_pvalue < 1e-10 and amount.psi > 1
    assert any(b.startswith("PSI") for b in amount.breaches) and any(b.startswith("KS") for b in amount.breaches)
    assert label.kind == "categorical" and label.chi2_pvalue < 1e-10
    assert label.share_change_category in ("a", "c") and label.share_change > 0.25
    assert label.null_rate_reference == 0 and 0.17 < label.null_rate_current < 0.23
    assert any("null rate moved" in b for b in label.breaches)
    assert any("share of" in b for b in label.breaches)
    assert [f.severity for f in report.features] == sorted((f.severity for f in report.features), reverse=True)


def test_the_same_distribution_is_not_flagged(drift_data):
    report = drift_lib.drift(drift_data, "fv_user", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SAME))
    assert not report.breached, [f.breaches for f in report.features]
    amount = next(f for f in report.features if f.feature == "amount")
    assert amount.ks_statistic < 0.05 and amount.psi < 0.05


def test_psi_of_identical_samples_is_zero_and_grows_with_the_shift():
    x = np.random.default_rng(0).normal(0, 1, 5000)
    assert drift_lib.psi(x, x) == pytest.approx(0.0, abs=1e-12)
    assert 0 < drift_lib.psi(x, x + 0.2) < drift_lib.psi(x, x + 0.5) < drift_lib.psi(x, x + 1.0)
    counts = np.array([0, 1, 1, 2] * 100, dtype=float)  # few distinct values: bins collapse, still defined
    assert drift_lib.psi(counts, counts) == pytest.approx(0.0, abs=1e-12)


def test_drift_cli_exit_code_table_json_and_html(drift_data, tmp_path):
    page = tmp_path / "drift.html"
    result = run(drift_data, "drift", "--select", "fv_user", "--reference", REFERENCE, "--current", SHIFTED, "--html", str(page))
    assert result.exit_code == CHECK_FAILED_EXIT, result.output
    assert "Drift (ranked)" in result.output and "PSI" in result.output and f"wrote {page}" in result.output
    text = page.read_text()
    assert text.count("<svg") == 2 and "amount" in text and "label" in text and "reference" in text
    # Self-contained: nothing is loaded from elsewhere (the only URL is SVG's namespace).
    assert not re.search(r"<(script|link|img)\b|\bsrc=|\bhref=", text)
    assert set(re.findall(r"https?://[^'\"]+", text)) == {"http://www.w3.org/2000/svg"}

    result = run(drift_data, "drift", "--select", "fv_user", "--reference", REFERENCE, "--current", SAME, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["breached"] is False and {f["feature"] for f in data["features"]} == {"amount", "label"}
    assert data["thresholds"]["psi"] == 0.2


def test_thresholds_come_from_the_views_meta(drift_data):
    """fv_user_copy reads the same rows, with monitoring thresholds so loose that nothing breaches."""
    view = drift_data.registry().feature_view("fv_user_copy")
    assert view.monitoring.psi == 100 and view.monitoring.null_rate_change == 1
    report = drift_lib.drift(drift_data, "fv_user_copy", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SHIFTED))
    assert not report.breached
    assert next(f for f in report.features if f.feature == "amount").psi > 1  # measured all the same


@pytest.mark.parametrize(
    "window, message",
    [
        ("2024-01-01T00:00:00..2024-01-15T00:00:00Z", "'2024-01-01T00:00:00' has no time zone; featsync times are UTC"),
        ("2024-01-01..2024-01-15", "'2024-01-01' has no time zone; featsync times are UTC, write e.g. 2024-01-01T00:00:00Z"),
        ("2024-01-01T00:00:00Z", "is not START..END"),
        ("2024-01-01T00:00:00Z..", "is not START..END"),
        ("2024-13-01T00:00:00Z..2024-01-15T00:00:00Z", "'2024-13-01T00:00:00Z' is not an RFC 3339 timestamp"),
        ("2024-01-15T00:00:00Z..2024-01-01T00:00:00Z", "the start must be before the end"),
    ],
)
def test_bad_windows_are_rejected(window, message):
    with pytest.raises(FeatsyncError, match=re.escape(message)) as info:
        drift_lib.Window.parse(window, "--current")
    assert str(info.value).startswith(f"--current '{window}'")


def test_windows_keep_their_instant_in_other_zones():
    window = drift_lib.Window.parse("2024-01-01T02:00:00+02:00..2024-01-02T00:00:00Z")
    assert window.start == datetime(2024, 1, 1, tzinfo=UTC) and str(window).startswith("2024-01-01T00:00:00Z")
    from featsync.offline.warehouse import PostgresWarehouse

    rendered = PostgresWarehouse.__new__(PostgresWarehouse)  # bind() only: renders the typed bound, no connection
    assert "cast('2024-01-01 00:00:00.000000' as timestamp)" in window.sql("ts", rendered, [])


def test_drift_bad_inputs_from_the_cli(drift_data):
    empty = "2030-01-01T00:00:00Z..2030-02-01T00:00:00Z"
    result = run(drift_data, "drift", "--select", "fv_user", "--reference", REFERENCE, "--current", empty)
    assert result.exit_code == 1
    assert (
        "the current window 2030-01-01T00:00:00Z..2030-02-01T00:00:00Z holds no rows of feature view 'fv_user'" in result.output
    )
    result = run(drift_data, "drift", "--select", "nope", "--reference", REFERENCE, "--current", SAME)
    assert result.exit_code == 2 and "no feature view named 'nope'" in result.output
    # A malformed option is a usage error (64), as every other; the old --feature-view still works.
    result = run(drift_data, "drift", "--feature-view", "fv_user", "--reference", "2024-01-01..2024-02-01", "--current", SAME)
    assert (
        result.exit_code == USAGE_EXIT and "--reference '2024-01-01..2024-02-01': '2024-01-01' has no time zone" in result.output
    )
    result = run(drift_data, "drift", "--reference", REFERENCE, "--current", SAME, "--json")
    assert result.exit_code == USAGE_EXIT
    assert json.loads(result.output)["error"] == {
        "kind": "usage", "exit_code": USAGE_EXIT, "message": "Missing option '--select' (the feature view to compare). "
        "(see 'featsync drift -h')",
    }  # fmt: skip


def test_a_view_not_built_is_a_clear_error(drift_data, redis_url):
    duck("alter view fv_user_copy rename to fv_user_copy_away")
    try:
        with pytest.raises(
            FeatsyncError, match=r"cannot read feature view 'fv_user_copy' \(.*fv_user_copy.*\) from the warehouse: "
        ):
            drift_lib.drift(drift_data, "fv_user_copy", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SAME))
        result = run(drift_data, "status", "--select", "fv_user_copy", "--redis-url", redis_url, "--key-prefix", "x")
        assert result.exit_code == 1 and "has dbt built it on this target?" in result.output
    finally:
        duck("alter view fv_user_copy_away rename to fv_user_copy")


# -- the monitoring meta contract --------------------------------------------------------


def test_monitoring_meta_is_validated_strictly(project):
    manifest = project.registry().manifest
    broken = copy.deepcopy(manifest)
    spec = broken["nodes"]["model.featsync_pit.fv_user"]["config"]["meta"]["feature_view"]
    spec["monitoring"] = {"pis": 0.1, "psi": -1, "ks_pvalue": 2, "max_staleness": "3 days", "min_online_keys": 1.5}
    with pytest.raises(DeclarationError) as info:
        Registry.from_manifest(broken)
    message = str(info.value)
    where = "model 'fv_user': feature_view.monitoring"
    assert f"{where}.pis: unknown key; expected one of chi2_pvalue, ks_pvalue" in message
    assert f"{where}.psi: must be a number >= 0, got -1" in message
    assert f"{where}.ks_pvalue: must be a number between 0 and 1, got 2" in message
    assert f"{where}.max_staleness: '3 days' is not a duration" in message
    assert f"{where}.min_online_keys: must be a whole number >= 0, got 1.5" in message
    spec["monitoring"] = ["psi"]
    with pytest.raises(DeclarationError, match="feature_view.monitoring: must be a mapping"):
        Registry.from_manifest(broken)


def test_format_age():
    assert [mstatus.format_age(s) for s in (45, 720, 3.1 * 3600, 40.1 * 86400, -7200)] == [
        "45s",
        "12m",
        "3.1h",
        "40.1d",
        "-2.0h",
    ]


def test_monitoring_defaults(project):
    registry = project.registry()
    user, pair = registry.feature_view("fv_user").monitoring, registry.feature_view("fv_pair").monitoring
    assert user.max_staleness == 3 * 3600  # the ttl
    assert pair.max_staleness is None  # no ttl: no staleness limit by default
    assert (user.psi, user.ks_statistic, user.ks_pvalue, user.max_push_lag, user.min_online_keys) == (0.2, 0.1, 0.01, 86400, 1)


# -- status and verify on DuckDB ------------------------------------------------------------

USERS = [
    ("u1", NOW - 2 * H, NOW - 2 * H, 1, "x"),
    ("u1", NOW - H, NOW - H, 2, "y"),
    ("a|b\\c", NOW - H, None, 5, None),
    ("é", NOW - H / 2, None, None, "z"),
    ("old", NOW - 4 * H, None, 9, "q"),  # older than the 3h ttl: expired, never pushed
]
PAIRS = [("u1", "m1", NOW - 240 * H, 0.5), ("u1", "m|2", NOW - 24 * H, 1.25)]
PROFILES = [("u1", NOW - H, NOW + H, "gold"), ("u2", NOW - 3 * H, NOW - H, "silver"), ("u3", NOW - H, None, "bronze")]


def load(execute, placeholder: str) -> None:
    for table, rows in (("user_rows", USERS), ("pair_rows", PAIRS), ("profile_rows", PROFILES)):
        execute(f"delete from {table}")
        for row in rows:
            execute(f"insert into {table} values ({', '.join([placeholder] * len(row))})", row)


@pytest.fixture
def online(project, redis_url):
    """The pit project's rows loaded on DuckDB and a pusher with a key prefix of its own."""
    load(duck, "?")
    client = redis.Redis.from_url(redis_url)
    pusher = Pusher(project, client, key_prefix=f"featsync-test-{uuid.uuid4().hex[:8]}")
    yield pusher
    delete_pushed_keys(project, client, pusher.key_prefix)


def test_status_before_and_after_a_push(online):
    project, client, prefix = online.project, online.client, online.key_prefix
    before = {s.feature_view: s for s in mstatus.status(project, client, prefix)}
    assert before["fv_user"].breaches == ["never pushed"] and before["fv_user"].last_push_at is None
    assert before["fv_user_copy"].online is False and before["fv_user_copy"].breaches == []
    assert before["fv_user"].newest_event_time == (NOW - H / 2).replace(tzinfo=UTC)
    assert before["fv_user"].entities_offline == 4 and before["fv_user"].online_keys == 0

    online.push()
    after = {s.feature_view: s for s in mstatus.status(project, client, prefix)}
    assert view_results(project, "status")["fv_pair"]["watermark"] == after["fv_pair"].watermark.isoformat().replace(
        "+00:00", "Z"
    )
    # push records the newest event time it wrote (not the expired 'old' row): online freshness
    layout = online.layout(project.registry().feature_view("fv_user"))
    state = online.state(project.registry().feature_view("fv_user"))
    assert datetime.fromisoformat(state["newest_event_time"]) == (NOW - H / 2).replace(tzinfo=UTC)
    fresh = online_freshness(project.registry().feature_view("fv_user"), state, (NOW + H).replace(tzinfo=UTC))
    assert fresh.age_seconds == 1.5 * 3600 and not fresh.stale and layout.state_key.startswith("fs:")
    stale = online_freshness(project.registry().feature_view("fv_user"), state, (NOW + 3 * H).replace(tzinfo=UTC))
    assert stale.breaches == ["newest event is 3.5h old > max_staleness 3h"]
    assert online_freshness(project.registry().feature_view("fv_user"), {}, NOW.replace(tzinfo=UTC)).breaches == ["never pushed"]
    # an incremental push with nothing new keeps the newest event time of the earlier push
    online.push(["fv_user"])
    assert online.state(project.registry().feature_view("fv_user"))["newest_event_time"] == state["newest_event_time"]
    for name in ("fv_user", "fv_pair", "fv_profile"):
        assert after[name].breaches == [], (name, after[name].breaches)
        # fv_profile's u1 has a valid_to after now, so a change marker after the watermark (the
        # push's clock): every push sends it again until then, and status says it is pending
        pending = 1 if name == "fv_profile" else 0
        assert after[name].lag_seconds == 0 and after[name].pending_rows == pending and after[name].last_push_mode == "full"
        assert after[name].push_age_seconds < 600
    assert (after["fv_user"].online_keys, after["fv_pair"].online_keys, after["fv_profile"].online_keys) == (3, 2, 2)
    assert after["fv_pair"].watermark == (NOW - 24 * H).replace(tzinfo=UTC)

    # A new pair row in the warehouse, not pushed: online is 23h behind (within the 1d default).
    duck("insert into pair_rows values ('u9', 'm9', ?, 2.0)", [NOW - H])
    (pair,) = mstatus.status(project, client, prefix, ["fv_pair"])
    assert pair.pending_rows == 1 and pair.lag_seconds == 23 * 3600 and pair.breaches == []
    # Thresholds: the staleness of fv_user (ttl 3h) and no keys online.
    later = NOW.replace(tzinfo=UTC).timestamp() + 4 * 3600
    (user,) = mstatus.status(project, client, prefix, ["fv_user"], now=lambda: later)
    assert user.breaches == ["newest event is 4.5h old > max_staleness 3h"]
    user_layout = Pusher(project, client, key_prefix=prefix).layout(project.registry().feature_view("fv_user"))
    client.delete(*client.scan_iter(match=f"{user_layout.prefix}*"))
    (user,) = mstatus.status(project, client, prefix, ["fv_user"])
    assert user.breaches == ["0 keys online < min_online_keys 1"]
    (user,) = mstatus.status(project, client, prefix, ["fv_user"], count_keys=False)
    assert user.online_keys is None and user.breaches == []


def test_status_sees_push_lag_beyond_its_threshold(online):
    online.push(["fv_pair"])
    duck("delete from pair_rows where merchant_id = 'm|2'")  # newest is now 10 days old ...
    online.push(["fv_pair"], full_refresh=True)  # ... and pushed with a 10-day-old watermark
    duck("insert into pair_rows values ('u9', 'm9', ?, 2.0)", [NOW - H])
    (pair,) = mstatus.status(online.project, online.client, online.key_prefix, ["fv_pair"])
    assert pair.lag_seconds == 239 * 3600
    assert pair.breaches == ["online is 10.0d behind the warehouse > max_push_lag 1d"]


def test_status_cli(online):
    args = ["--redis-url", _url(online), "--key-prefix", online.key_prefix]
    result = run(online.project, "status", *args)
    assert result.exit_code == CHECK_FAILED_EXIT and "never pushed" in result.output
    online.push()
    result = run(online.project, "status", *args)
    assert result.exit_code == 0, result.output
    assert "fv_user v1" in result.output and "offline only" in result.output
    data = {s["feature_view"]: s for s in json.loads(run(online.project, "status", *args, "--json").output)}
    assert data["fv_user"]["online_keys"] == 3 and data["fv_user"]["watermark"].endswith("Z")
    result = run(online.project, "status", *args, "--select", "nope")
    assert result.exit_code == 2 and "no feature view named 'nope'" in result.output


def _url(pusher: Pusher) -> str:
    kwargs = pusher.client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def test_a_clean_push_verifies_with_no_mismatches(online):
    online.push()
    results = {r.feature_view: r for r in monitor_verify.verify(online.project, online.client, online.key_prefix)}
    recorded = view_results(online.project, "verify")
    assert set(recorded) >= set(results) and recorded["fv_user"]["sampled"] == 4
    assert set(results) == {"fv_user", "fv_pair", "fv_profile"}  # the online views
    for result in results.values():
        assert result.mismatches == 0 and result.breaches == [], result.checks
    user, profile = results["fv_user"], results["fv_profile"]
    assert (user.sampled, user.present_online, user.expired_offline, user.missing_online) == (4, 3, 1, 0)
    assert (profile.sampled, profile.present_online, profile.expired_offline) == (3, 2, 1)  # u2: valid_to passed
    assert [c.feature for c in user.checks] == ["event_timestamp", "amount", "label"]
    assert all(c.checked == 4 for c in user.checks)


def test_an_event_time_after_2255_with_microseconds_verifies_clean(online):
    """Past 2**53 us (2255-06-05) the online store keeps an event time rounded to a float64's
    precision: verify compared it with the exact warehouse time and reported a mismatch on a
    clean push. It compares the warehouse time as the store keeps it now."""
    far = datetime(2300, 1, 1, 0, 0, 0, 123457)
    duck("insert into pair_rows values ('u7', 'm7', ?, 3.0)", [far])
    online.push(["fv_pair"])
    stored = online.client.get(online.layout(online.project.registry().feature_view("fv_pair")).key(["u7", "m7"]))
    assert stored is not None
    (pair,) = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_pair"])
    assert pair.present_online == 3 and pair.mismatches == 0 and pair.breaches == [], pair.checks


def test_changing_the_warehouse_without_pushing_is_seen(online):
    online.push()
    duck("update user_rows set amount = 20 where user_id = 'u1' and amount = 2")  # corrected in place
    duck("insert into user_rows values ('new', ?, null, 7, 'n')", [NOW - H])  # never pushed
    (user,) = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_user"])
    checks = {c.feature: c for c in user.checks}
    assert user.sampled == 5 and user.missing_online == 1
    assert checks["amount"].mismatches == 2 and checks["amount"].rate == pytest.approx(0.4)
    assert checks["label"].mismatches == 1 and checks["event_timestamp"].mismatches == 1
    assert {"entity": "u1", "online": 2, "offline": 20} in checks["amount"].examples
    assert {"entity": "new", "online": "not_found", "offline": 7} in checks["amount"].examples
    assert user.breaches == [
        "3 of 3 columns differ for more than max_mismatch_rate 0.0% of 5 sampled entities; worst 'amount': 40.0%"
    ]

    result = run(online.project, "verify", "--select", "fv_user", "--redis-url", _url(online), "--key-prefix", online.key_prefix)
    assert result.exit_code == CHECK_FAILED_EXIT and "u1: 2 / 20" in result.output and "missing online" in result.output

    online.push(["fv_user"], full_refresh=True)  # an in-place correction needs a full refresh
    (user,) = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_user"])
    assert user.mismatches == 0
    result = run(online.project, "verify", "--redis-url", _url(online), "--key-prefix", online.key_prefix, "--json")
    assert result.exit_code == 0 and all(r["breaches"] == [] for r in json.loads(result.stdout))


def test_a_value_online_that_push_would_not_write_is_a_mismatch(online):
    """u3's profile is closed in the warehouse after the push (valid_to set: deleted upstream).
    Push would not write it now, so finding it online is skew, reported as such."""
    online.push()
    duck("update profile_rows set valid_to = ? where user_id = 'u3'", [NOW - H / 2])
    (profile,) = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_profile"])
    assert profile.expired_offline == 2 and profile.present_online == 2
    tier = next(c for c in profile.checks if c.feature == "tier")
    assert tier.mismatches == 1 and tier.examples == [{"entity": "u3", "online": "present", "offline": "expired"}]


def test_verify_samples_deterministically(online):
    online.push()
    first = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_pair"], sample=1, seed=3)
    again = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_pair"], sample=1, seed=3)
    assert first[0].sampled == 1 and first[0].checks == again[0].checks


def test_verify_and_status_of_an_empty_view(online):
    online.push()
    duck("delete from pair_rows")
    (pair,) = monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_pair"])
    assert pair.sampled == 0 and pair.breaches == []
    (pair,) = mstatus.status(online.project, online.client, online.key_prefix, ["fv_pair"])
    assert pair.entities_offline == 0 and pair.newest_event_time is None and pair.online_keys == 2


def test_verify_bad_inputs(online):
    with pytest.raises(UsageError, match="the sample must be at least 1 entity, got 0"):
        monitor_verify.verify(online.project, online.client, online.key_prefix, sample=0)
    with pytest.raises(FeatsyncError, match="feature view 'fv_user_copy' is not online"):
        monitor_verify.verify(online.project, online.client, online.key_prefix, ["fv_user_copy"])
    with pytest.raises(NotFoundError, match="no feature view named 'nope'"):
        monitor_verify.verify(online.project, online.client, online.key_prefix, ["nope"])
    result = run(online.project, "verify", "--redis-url", "redis://127.0.0.1:1/0", "--key-prefix", "x")
    assert result.exit_code == 1 and "cannot read from Redis" in result.output
    # Beyond a 64-bit integer, the warehouse's overflow was exit 1 "(has dbt built it on this target?)".
    huge = "99999999999999999999999"
    for option in ("--sample", "--seed", "--seed=-" + huge):
        args = [option, huge] if not option.startswith("--seed=") else [option]
        result = run(online.project, "verify", *args, "--redis-url", _url(online), "--key-prefix", online.key_prefix)
        assert result.exit_code == 64 and "dbt" not in result.output, result.output
    with pytest.raises(UsageError, match="the sample must be at most 9223372036854775807 entities"):
        monitor_verify.verify(online.project, online.client, online.key_prefix, sample=int(huge))
    with pytest.raises(UsageError, match="the seed must be"):
        monitor_verify.verify(online.project, online.client, online.key_prefix, seed=-int(huge))


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_project(pit_postgres):
    return pit_postgres.project, pit_postgres.execute


def test_status_and_verify_on_postgres(pg_project, redis_url):
    project, execute = pg_project
    load(execute, "%s")
    client = redis.Redis.from_url(redis_url)
    pusher = Pusher(project, client, key_prefix=f"featsync-test-{uuid.uuid4().hex[:8]}")
    try:
        pusher.push()
        status = {s.feature_view: s for s in mstatus.status(project, client, pusher.key_prefix)}
        assert all(status[v].breaches == [] and status[v].lag_seconds == 0 for v in ("fv_user", "fv_pair", "fv_profile"))
        assert status["fv_user"].online_keys == 3 and status["fv_user"].entities_offline == 4
        assert status["fv_user"].newest_event_time == (NOW - H / 2).replace(tzinfo=UTC)
        results = monitor_verify.verify(project, client, pusher.key_prefix)
        assert all(r.mismatches == 0 for r in results), [r.checks for r in results]
        assert {r.feature_view: r.expired_offline for r in results} == {"fv_user": 1, "fv_pair": 0, "fv_profile": 1}

        execute("update pair_rows set score = 9.5 where merchant_id = 'm1'")
        execute("insert into pair_rows values ('u9', 'm9', %s, 2.0)", (NOW - H,))
        (pair,) = monitor_verify.verify(project, client, pusher.key_prefix, ["fv_pair"])
        checks = {c.feature: c for c in pair.checks}
        assert pair.missing_online == 1 and checks["score"].mismatches == 2 and checks["event_timestamp"].mismatches == 1
        assert {"entity": "u1|m1", "online": 0.5, "offline": 9.5} in checks["score"].examples
        (pair_status,) = mstatus.status(project, client, pusher.key_prefix, ["fv_pair"])
        assert pair_status.pending_rows == 1 and pair_status.lag_seconds == 23 * 3600
    finally:
        delete_pushed_keys(project, client, pusher.key_prefix)


def test_drift_on_postgres(pg_project):
    project, execute = pg_project
    rows = pa.concat_tables(
        [
            window_rows(datetime(2024, 1, 1), 1000, 1, False),
            window_rows(datetime(2024, 1, 15), 1000, 2, False),
            window_rows(datetime(2024, 2, 1), 1000, 3, True),
        ]
    )
    execute("delete from user_rows")
    execute(f"insert into user_rows values {', '.join(['%s'] * rows.num_rows)}", [tuple(r.values()) for r in rows.to_pylist()])
    shifted = drift_lib.drift(project, "fv_user", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SHIFTED))
    by_name = {f.feature: f for f in shifted.features}
    assert shifted.breached and by_name["amount"].psi > 1 and by_name["label"].chi2_pvalue < 1e-10
    assert 0.15 < by_name["label"].null_rate_current < 0.25
    same = drift_lib.drift(project, "fv_user", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SAME))
    assert not same.breached and same.reference_rows == same.current_rows == 1000


@pytest.mark.parametrize(
    "stored, breach",
    [
        ("not a time", "push state field 'newest_event_time' is not a time: 'not a time'"),
        ("9999-12-31T23:59:59.999999+00:00", "push state field 'newest_event_time' is in the future"),
        (None, None),  # as push wrote it
    ],
    ids=["malformed", "far future", "normal"],
)
def test_status_the_ui_and_metrics_judge_the_newest_event_time_alike(online, redis_url, stored, breach):
    """A newest_event_time written by hand: `featsync status` raised (malformed) or said nothing of
    it (far future) while the UI and /metrics showed an age of minus 8,000 years, fresh. All three
    now judge it with online_freshness: no age (no gauge) and a breach naming the field."""
    from starlette.testclient import TestClient

    from featsync.online.server import ServeConfig, create_app

    project, client, prefix = online.project, online.client, online.key_prefix
    view = project.registry().feature_view("fv_user")
    online.push(["fv_user"])
    if stored is not None:
        client.hset(online.layout(view).state_key, "newest_event_time", stored)
    (status,) = mstatus.status(project, client, prefix, ["fv_user"], count_keys=False)
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), project.target, redis_url, prefix, ui=True)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        gauges = re.findall(
            r'^featsync_feature_view_freshness_seconds\{feature_view="fv_user"\} (\S+)$', http.get("/metrics").text, re.M
        )
        health = http.get("/ui/health", headers={"accept": "text/html"}).text
    row = re.search(r'<tr data-view="fv_user" data-freshness="(\w+)">(.*?)</tr>', health, re.S)
    if breach is None:
        assert status.breaches == [] and status.online_age_seconds is not None and status.online_age_seconds > 0
        assert status.online_newest_event_time == (NOW - H / 2).replace(tzinfo=UTC)
        assert len(gauges) == 1 and float(gauges[0]) >= status.online_age_seconds  # scraped after status ran
        assert row[1] == "fresh"
    else:
        assert [b for b in status.breaches if breach in b] == status.breaches, status.breaches  # the only one
        assert status.online_age_seconds is None and status.online_newest_event_time is None
        assert gauges == []
        assert row[1] == "stale" and breach.replace("'", "&#39;") in row[2]


# -- attack fixes: non-finite values in drift, a hostile push state in status/UI/metrics --------


def _pair_scores(reference: list[float], current: list[float]) -> None:
    """fv_pair's rows: `reference` in January 2024, `current` in February (REFERENCE, SHIFTED)."""
    duck("delete from pair_rows")
    for start, scores in ((datetime(2024, 1, 1), reference), (datetime(2024, 2, 1), current)):
        for i, score in enumerate(scores):
            duck("insert into pair_rows values (?, 'm', ?, ?)", [f"p{start.month}-{i}", start + i * H, score])


def test_one_nan_in_a_window_does_not_turn_drift_off(project):
    """One NaN in the reference made ks_2samp's statistic and p-value NaN and every PSI edge NaN:
    every comparison with NaN is False, so a shift from 0..16 to 1000+ read 'ok', exit 0. Non-finite
    values are now left out of KS/PSI and counted with the NULLs."""
    _pair_scores([*range(17), float("nan")], [1000.0 + i for i in range(18)])
    try:
        result = run(project, "drift", "--select", "fv_pair", "--reference", REFERENCE, "--current", SHIFTED, "--json")
        assert result.exit_code == CHECK_FAILED_EXIT, result.output
        (score,) = [f for f in json.loads(result.output)["features"] if f["feature"] == "score"]
        assert score["ks_statistic"] == 1.0 and score["psi"] > 5, score
        assert score["null_rate_reference"] == pytest.approx(1 / 18) and score["null_rate_current"] == 0
        assert any(b.startswith("PSI") for b in score["breaches"]) and any(b.startswith("KS") for b in score["breaches"])
    finally:
        duck("delete from pair_rows")


def test_infinities_leave_no_warning_and_a_drawable_histogram(project, tmp_path):
    """+-inf gave the right statistics but numpy RuntimeWarnings and a histogram with NaN edges and
    negative bar heights in --html; the recorded result stored those edges as null, and the UI's
    drift report (drift._svg formatting them) answered 500."""
    import warnings

    _pair_scores([*range(17), float("inf")], [*(1000.0 + i for i in range(17)), float("-inf")])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a RuntimeWarning fails the test
            report = drift_lib.drift(project, "fv_pair", drift_lib.Window.parse(REFERENCE), drift_lib.Window.parse(SHIFTED))
        (score,) = [f for f in report.features if f.feature == "score"]
        assert score.breaches and score.null_rate_reference == score.null_rate_current == pytest.approx(1 / 18)
        assert all(np.isfinite(score.histogram["edges"])), score.histogram
        page = drift_lib.html_report(report)
        assert "nan" not in page.lower() and "height='-" not in page
        assert all(x is not None for x in view_results(project, "drift")["fv_pair"]["features"][0]["histogram"]["edges"])
    finally:
        duck("delete from pair_rows")


def test_a_nan_statistic_is_a_breach_never_a_pass(project):
    result = drift_lib.FeatureDrift("x", "numeric", 10, 10, 0.0, 0.0, ks_statistic=math.nan, ks_pvalue=math.nan, psi=math.nan)
    drift_lib._judge(result, project.registry().feature_view("fv_pair").monitoring)
    assert [b for b in result.breaches if "not a number" in b] == [
        "ks_statistic is not a number: the comparison cannot pass",
        "ks_pvalue is not a number: the comparison cannot pass",
        "psi is not a number: the comparison cannot pass",
    ]
    assert result.severity == math.inf


def test_the_ui_draws_a_drift_report_recorded_with_null_edges(project, redis_url):
    """A recorded report whose histogram holds null edges (NaN, as files written before
    non-finite values were left out held them): the report renders, no 500."""
    from starlette.testclient import TestClient

    from featsync.online.server import ServeConfig, create_app
    from featsync.results import about, save_result

    nulls = {"edges": [None] * 11, "reference": [0.1] * 10, "current": [None] * 10}
    feature = drift_lib.FeatureDrift("score", "numeric", 18, 18, 0.0, 0.0, histogram=nulls)
    report = drift_lib.DriftReport(
        "fv_pair",
        drift_lib.Window.parse(REFERENCE),
        drift_lib.Window.parse(SHIFTED),
        18,
        18,
        project.registry().feature_view("fv_pair").monitoring,
        [feature],
    )
    view = project.registry().feature_view("fv_pair")
    save_result(project, "drift", {"fv_pair": report.as_dict(histograms=True)}, abouts={"fv_pair": about(view)})
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), project.target, redis_url, "unused", ui=True)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        page = http.get("/ui/drift/fv_pair")
    assert page.status_code == 200, page.text
    assert "its recorded bins are not numbers" in page.text


def _judged(project, client, prefix: str, redis_url: str) -> tuple[mstatus.ViewStatus, list[str], str]:
    """fv_user as status, /metrics (its gauges' names) and the UI health row judge it."""
    from starlette.testclient import TestClient

    from featsync.online.server import ServeConfig, create_app

    (status,) = mstatus.status(project, client, prefix, ["fv_user"], count_keys=False)
    config = ServeConfig(str(project.project_dir), str(project.profiles_dir), project.target, redis_url, prefix, ui=True)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as http:
        gauges = re.findall(r'^(featsync_feature_view_\w+)\{feature_view="fv_user"\}', http.get("/metrics").text, re.M)
        health = http.get("/ui/health", headers={"accept": "text/html"}).text
    row = re.search(r'<tr data-view="fv_user" data-freshness="\w+">.*?</tr>', health, re.S)[0]
    return status, gauges, row.replace("&#39;", "'")


@pytest.mark.parametrize(
    "field, stored",
    [("watermark", "2099-01-01 00:00:00.000000"), ("last_push_at", "2099-01-01T00:00:00+00:00")],
)
def test_a_watermark_or_last_push_in_the_future_is_a_breach_naming_it(online, redis_url, field, stored):
    """Only newest_event_time was checked: a watermark in 2099 read as pending 0, lag 0, exit 0
    (push distrusts it and pushes in full), a last push in 2099 as a negative push age, 'fresh' in
    the UI and last_push 4.07e9 in /metrics. Both are judged now as newest_event_time is."""
    project, client, prefix = online.project, online.client, online.key_prefix
    online.push(["fv_user"])
    client.hset(online.layout(project.registry().feature_view("fv_user")).state_key, field, stored)
    status, gauges, row = _judged(project, client, prefix, redis_url)
    breach = f"push state field '{field}' is in the future: '{stored}'"
    assert [b for b in status.breaches if breach in b] == status.breaches and status.breaches, status.breaches
    assert getattr(status, field) is None and status.lag_seconds is None
    if field == "watermark":  # not "pending 0, lag 0": a full push is what comes next
        assert status.pending_rows is None
    else:  # no negative push age, no gauge of a push in 2099
        assert status.push_age_seconds is None and "featsync_feature_view_last_push_timestamp_seconds" not in gauges
    assert 'data-freshness="stale"' in row and breach in row
    args = ["--redis-url", _url(online), "--key-prefix", prefix, "--select", "fv_user", "--no-count-keys"]
    assert run(project, "status", *args).exit_code == CHECK_FAILED_EXIT


def test_a_state_owned_by_another_view_is_a_breach_and_its_values_are_not_shown(online, redis_url):
    """push refuses a state hash whose identity names another view; status said no breaches, the
    UI fresh and /metrics exported the other owner's times as this view's."""
    project, client, prefix = online.project, online.client, online.key_prefix
    online.push(["fv_user"])
    client.hset(online.layout(project.registry().feature_view("fv_user")).state_key, "identity", "other-prefix/types/v1")
    with pytest.raises(FeatsyncError) as refused:
        online.push(["fv_user"])
    assert "'other-prefix/types/v1'" in str(refused.value)
    status, gauges, row = _judged(project, client, prefix, redis_url)
    (problem,) = status.breaches
    assert problem in str(refused.value)  # push's own message
    assert status.last_push_at is None and status.online_newest_event_time is None and status.watermark is None
    # neither freshness nor last push of another view's state (validation results of other tests may be recorded)
    assert [g for g in gauges if "validation" not in g] == []
    assert 'data-freshness="stale"' in row and problem in row


def test_a_state_without_its_watermark_says_so(online):
    """After `hdel fs:<id> watermark`, status said "the last push saw no rows; the warehouse has some now"."""
    project, client, prefix = online.project, online.client, online.key_prefix
    online.push(["fv_user"])
    client.hdel(online.layout(project.registry().feature_view("fv_user")).state_key, "watermark")
    (status,) = mstatus.status(project, client, prefix, ["fv_user"], count_keys=False)
    (breach,) = status.breaches
    assert breach.startswith("the push state has no watermark although its last push read"), breach
    assert "full one" in breach


@pytest.mark.parametrize("command", ["serve", "ui"])
@pytest.mark.parametrize("value", ["yesterday", "2024-01-01T00:00:00"])
def test_an_invalid_featsync_now_stops_the_servers_at_start_up(project, command, value):
    """serve and ui started with FEATSYNC_NOW unparseable, then answered every /metrics scrape and
    UI page with a 500 while /health said 200. They refuse to start now (exit 64)."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "featsync", command, "--project-dir", str(project.project_dir), "--target", "duckdb"]
    env = {**os.environ, "FEATSYNC_NOW": value, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([*args, "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == USAGE_EXIT, done.stderr
    assert "FEATSYNC_NOW" in done.stderr and value in done.stderr
