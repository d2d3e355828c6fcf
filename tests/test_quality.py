"""Quality gates on real engines: the example suites, corrupted feature views, strict loading, the push gate.

The example project is built once per engine (conftest); this module validates private
copies of its feature-view tables (a copied DuckDB file; tables copied into a schema of
its own on PostgreSQL), restored before every test, so corrupting them touches nothing
shared. The data is the unshifted example (ends 2024-04-29), so freshness is measured
against now = 2024-04-30, as `featsync validate --now` allows.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import redis
from click.testing import CliRunner

from conftest import EXAMPLE_NOW, ROOT, copy_project, delete_pushed_keys, pushed_keys
from featsync.cli import main
from featsync.errors import CHECK_FAILED_EXIT, DeclarationError, FeatsyncError
from featsync.project import Project
from featsync.quality import report, suites
from featsync.quality import validate as quality
from featsync.results import result_path, validation_failures, view_results

NOW = EXAMPLE_NOW
VIEWS = (
    "merchant_profile_features",
    "merchant_risk_features",
    "product_sales_features",
    "user_last_transaction",
    "user_merchant_features",
    "user_transaction_features",
)
SUITE_SIZES = {
    "merchant_profile_features": 10,
    "merchant_risk_features": 13,
    "product_sales_features": 11,
    "user_last_transaction": 8,
    "user_merchant_features": 11,
    "user_transaction_features": 17,
}

# One corruption per kind the issue names, in SQL both engines run.
CORRUPT = [
    # NULL keys: three users lose their id
    "update {s}.user_transaction_features set user_id = null where user_id in ('u0001', 'u0002', 'u0003')"
    " and transaction_count_90d = 1",
    # out of range: negative counts, rates above 1, an unknown category
    "update {s}.user_transaction_features set transaction_count_7d = -1 where user_id = 'u0010'",
    "update {s}.merchant_risk_features set chargeback_rate_30d = 1.5 where merchant_id = 'm0007'",
    "update {s}.merchant_profile_features set category = 'casino' where merchant_id = 'm0004'",
    # duplicates of entity + timestamp
    "insert into {s}.user_merchant_features select * from {s}.user_merchant_features where user_id = 'u0020'",
    # stale: the last four weeks of product sales never arrived
    "delete from {s}.product_sales_features where event_timestamp > '2024-04-01'",
]


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# -- DuckDB ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def duck(duckdb_build, tmp_path_factory) -> Iterator[tuple[Project, Path, Path]]:
    """(project copy, its DuckDB file, the pristine copy to restore from)."""
    tmp = tmp_path_factory.mktemp("quality-duck")
    pristine = tmp / "pristine.duckdb"
    shutil.copy(os.environ["FEATSYNC_DUCKDB_PATH"], pristine)
    db = tmp / "db" / "featsync.duckdb"  # same file stem, so the manifest's relations match
    db.parent.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEATSYNC_DUCKDB_PATH", str(db))
        project = Project.open(copy_project(tmp / "project"), None, "dev")
        shutil.copy(pristine, db)
        project.registry()  # parse once
        yield project, db, pristine


@pytest.fixture
def duck_project(duck) -> Iterator[Project]:
    project, db, pristine = duck
    shutil.copy(pristine, db)
    suites = {p.name: p.read_text() for p in (project.project_dir / "expectations").iterdir()}
    yield project
    for p in (project.project_dir / "expectations").iterdir():
        if p.name not in suites:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name, text in suites.items():
        (project.project_dir / "expectations" / name).write_text(text)


def corrupt_duckdb(db: Path, statements=CORRUPT) -> None:
    with duckdb.connect(str(db)) as con:
        for sql in statements:
            con.execute(sql.format(s="main"))


def by_view(results: list[quality.ViewValidation]) -> dict[str, quality.ViewValidation]:
    return {r.feature_view: r for r in results}


def failing(validation: quality.ViewValidation) -> dict[tuple[str, str | None], quality.ExpectationResult]:
    return {(r.expectation, r.column): r for r in validation.failures}


def test_example_suites_pass_on_duckdb(duck_project, tmp_path):
    junit = tmp_path / "validate.xml"
    code, out, err = run_cli("validate", "--project-dir", str(duck_project.project_dir), "--now", NOW, "--junit", str(junit))
    assert code == 0, out + err
    for view in VIEWS:
        assert f"{view}: PASSED {SUITE_SIZES[view]}/{SUITE_SIZES[view]} expectations" in out
    root = ET.parse(junit).getroot()
    assert {s.get("name"): int(s.get("tests")) for s in root} == SUITE_SIZES
    assert all(s.get("failures") == "0" and s.get("errors") == "0" for s in root)


def assert_corruption_found(results: list[quality.ViewValidation]) -> None:
    """Every injected problem is found, with its column, counts and bad values; nothing else fails."""
    views = by_view(results)
    assert {v for v, r in views.items() if not r.success} == {
        "user_transaction_features",
        "merchant_risk_features",
        "merchant_profile_features",
        "user_merchant_features",
        "product_sales_features",
    }
    user = failing(views["user_transaction_features"])
    assert set(user) == {
        ("expect_column_values_to_not_be_null", "user_id"),
        ("expect_column_values_to_be_between", "transaction_count_7d"),
    }
    nulls = user[("expect_column_values_to_not_be_null", "user_id")]
    assert nulls.status == "failed" and nulls.unexpected_count == 3 and nulls.element_count == 4000
    assert nulls.unexpected_percent == pytest.approx(0.075)
    negative = user[("expect_column_values_to_be_between", "transaction_count_7d")]
    assert negative.unexpected_count > 0 and negative.sample_values == [-1]
    assert "[transaction_count_7d] min_value=0" in negative.describe() and "e.g. -1" in negative.describe()

    rate = failing(views["merchant_risk_features"])[("expect_column_values_to_be_between", "chargeback_rate_30d")]
    assert rate.unexpected_count > 0 and rate.sample_values == [1.5]
    assert len(views["merchant_risk_features"].failures) == 1

    category = failing(views["merchant_profile_features"])[("expect_column_values_to_be_in_set", "category")]
    assert (category.unexpected_count, category.sample_values) == (1, ["casino"])

    dup = failing(views["user_merchant_features"])
    (duplicates,) = dup.values()
    assert duplicates.expectation == "expect_compound_columns_to_be_unique"
    assert duplicates.column == "user_id, merchant_id, event_timestamp"
    assert duplicates.unexpected_count > 0 and duplicates.unexpected_count % 2 == 0  # each original and its copy
    assert all(v["user_id"] == "u0020" for v in duplicates.sample_values)

    (stale,) = failing(views["product_sales_features"]).values()
    assert (stale.expectation, stale.column) == ("expect_column_max_to_be_between", "event_timestamp")
    assert str(stale.observed_value).startswith("2024-04-01")
    assert "$now_minus_2d (2024-04-28 00:00:00)" in stale.describe()


def test_corrupted_views_fail_on_duckdb(duck, duck_project, tmp_path):
    corrupt_duckdb(duck[1])
    assert_corruption_found(quality.validate(duck_project, now=NOW))
    junit = tmp_path / "validate.xml"
    code, out, err = run_cli("validate", "--project-dir", str(duck_project.project_dir), "--now", NOW, "--junit", str(junit))
    assert code == CHECK_FAILED_EXIT
    assert "user_transaction_features: FAILED 15/17 expectations, 4,000 rows" in out
    assert "FAIL  #1 column_values_to_not_be_null [user_id]: 3 unexpected of 4,000 (0.07%); e.g. NULL" in out
    assert "[category] value_set=" in out and "1 unexpected of 40 (2.50%); e.g. 'casino'" in out
    assert "error: validation failed:" in err
    root = ET.parse(junit).getroot()
    failures = {s.get("name"): s.get("failures") for s in root}
    assert failures["user_transaction_features"] == "2" and failures["merchant_risk_features"] == "1"
    messages = [f.get("message") for f in root.iter("failure")]
    assert any("compound_columns_to_be_unique [user_id, merchant_id, event_timestamp]" in m for m in messages)

    code, out, _ = run_cli("validate", "--project-dir", str(duck_project.project_dir), "--now", NOW, "--json")
    data = {v["feature_view"]: v for v in json.loads(out)}
    assert code == CHECK_FAILED_EXIT and data["product_sales_features"]["status"] == "failed"
    assert data["product_sales_features"]["parameters"] == {"now_minus_2d": "2024-04-28 00:00:00"}


def test_the_last_result_of_each_view_is_recorded(duck, duck_project):
    """validate records each view's result for the UI and /metrics; a --select run keeps the others'."""
    result_path(duck_project, "validate").unlink(missing_ok=True)
    corrupt_duckdb(duck[1])
    quality.validate(duck_project, now=NOW)
    recorded = view_results(duck_project, "validate")
    assert set(recorded) == set(VIEWS)
    assert validation_failures(recorded["user_transaction_features"]) == 2
    shutil.copy(duck[2], duck[1])  # the pristine data again
    quality.validate(duck_project, ["user_transaction_features"], now=NOW)
    recorded = view_results(duck_project, "validate")
    assert validation_failures(recorded["user_transaction_features"]) == 0
    assert validation_failures(recorded["merchant_risk_features"]) == 1  # not re-run: its last result stays


def test_select_and_freshness_against_the_clock(duck_project, monkeypatch):
    (only,) = quality.validate(duck_project, ["merchant_profile_features"], now=NOW)
    assert only.success and only.now == "2024-04-30T00:00:00+00:00"
    # The real clock (no --now): the 2024 example data is stale, so freshness fails; FEATSYNC_NOW fixes it.
    monkeypatch.delenv("FEATSYNC_NOW", raising=False)
    (stale,) = quality.validate(duck_project, ["merchant_profile_features"])
    assert [r.expectation for r in stale.failures] == ["expect_column_max_to_be_between"]
    monkeypatch.setenv("FEATSYNC_NOW", "2024-05-10T00:00:00+00:00")
    (fresh,) = quality.validate(duck_project, ["merchant_profile_features"])  # newest 2024-04-28, max age 14d
    assert fresh.success
    with pytest.raises(FeatsyncError, match="has no time zone"):
        quality.validate(duck_project, now="2024-04-30T00:00:00")
    with pytest.raises(FeatsyncError, match="no feature view named 'nope'"):
        quality.validate(duck_project, ["nope"], now=NOW)


def test_sampled_validation_keeps_whole_entities_and_the_full_row_count(duck, duck_project):
    with duckdb.connect(str(duck[1])) as con:
        newest_user = con.execute(
            "select user_id from user_transaction_features order by event_timestamp desc limit 1"
        ).fetchone()[0]
        con.execute(
            f"insert into user_transaction_features select * from user_transaction_features where user_id = '{newest_user}'"
        )
        total = con.execute("select count(*) from user_transaction_features").fetchone()[0]
    (result,) = quality.validate(duck_project, ["user_transaction_features"], now=NOW, max_rows=1000)
    assert result.sampled and result.rows_total == total and result.rows_validated < total
    failures = failing(result)
    assert set(failures) == {("expect_compound_columns_to_be_unique", "user_id, event_timestamp")}
    row_count = next(r for r in result.results if r.expectation == "expect_table_row_count_to_be_between")
    assert row_count.success and row_count.observed_value == total  # bounds checked against the full count
    with duckdb.connect(str(duck[1])) as con:  # keep 500 rows: under the suite's minimum of 1,000
        con.execute("delete from user_transaction_features where event_timestamp < '2024-04-15'")
        kept = con.execute("select count(*) from user_transaction_features").fetchone()[0]
    (small,) = quality.validate(duck_project, ["user_transaction_features"], now=NOW, max_rows=100)
    assert small.sampled and kept < 1000
    count = failing(small)[("expect_table_row_count_to_be_between", None)]
    assert count.observed_value == kept


def test_errored_expectation_is_an_error_not_a_pass(duck_project):
    suite = duck_project.project_dir / "expectations" / "merchant_profile_features.json"
    spec = json.loads(suite.read_text())
    spec["expectations"].append(
        {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "category", "min_value": 0, "max_value": 1}}
    )
    suite.write_text(json.dumps(spec))
    (result,) = quality.validate(duck_project, ["merchant_profile_features"], now=NOW)
    assert result.status == "error" and not result.success
    (error,) = result.failures
    assert error.status == "error" and error.index == 11 and error.error
    assert "ERROR" in "\n".join(report.report_lines([result]))


def test_exception_info_shapes():
    flat_ok = {"raised_exception": False, "exception_message": None, "exception_traceback": None}
    flat_error = {"raised_exception": True, "exception_message": "boom", "exception_traceback": "..."}
    keyed = {"MetricConfigurationID(column.mean)": {"raised_exception": True, "exception_message": "bad column"}}
    assert quality._exception_message(flat_ok) is None
    assert quality._exception_message(flat_error) == "boom"
    assert quality._exception_message(keyed) == "bad column"
    assert quality._exception_message({}) is None


# -- strict loading ---------------------------------------------------------------


def write_suite(project: Project, name: str, content: str | dict) -> Path:
    path = project.project_dir / "expectations" / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def load_problems(project: Project) -> str:
    with pytest.raises(DeclarationError) as info:
        suites.load_suites(project)
    return str(info.value)


def test_typo_in_expectation_type_names_file_and_entry(duck_project):
    spec = json.loads((duck_project.project_dir / "expectations" / "user_transaction_features.json").read_text())
    spec["expectations"][2]["type"] = "expect_table_row_count_to_be_betwen"
    write_suite(duck_project, "user_transaction_features.json", spec)
    message = load_problems(duck_project)
    assert (
        "expectations/user_transaction_features.json: expectation #3 (expect_table_row_count_to_be_betwen): type: "
        "unknown expectation type 'expect_table_row_count_to_be_betwen' (Great Expectations would drop it silently)"
    ) in message
    code, _, err = run_cli("validate", "--project-dir", str(duck_project.project_dir), "--now", NOW)
    assert code == 2 and "expectation #3" in err
    # the push gate refuses too, before anything is read or written
    code, _, err = run_cli("push", "--project-dir", str(duck_project.project_dir), "--now", NOW, "--dry-run")
    assert code == 2 and "expect_table_row_count_to_be_betwen" in err


def test_bad_kwargs_columns_and_parameters_are_all_reported(duck_project):
    suite = {
        "name": "merchant_profile_features",
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "merchant_id"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "risk_tier", "min_value": "x"}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "merchant"}},
            {
                "type": "expect_column_max_to_be_between",
                "kwargs": {"column": "event_timestamp", "min_value": {"$PARAMETER": "today"}},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "category"}, "mata": {}},
        ],
    }
    write_suite(duck_project, "merchant_profile_features.json", suite)
    write_suite(duck_project, "merchant_profile_features.yml", "name: merchant_profile_features\nexpectations: []\n")
    write_suite(duck_project, "user_features.json", {"expectations": [{"type": "expect_column_values_to_not_be_null"}]})
    write_suite(duck_project, "product_sales_features.json", '{"name": "product_sales_features", "expectations": [')
    write_suite(duck_project, "merchant_risk_features.json", {"name": "merchant_risk", "expectations": [], "tags": []})
    message = load_problems(duck_project)
    f = "expectations/merchant_profile_features.json"
    assert f"{f}: expectation #1 (expect_column_values_to_not_be_null): kwargs:" in message and "colum" in message
    assert f"{f}: expectation #2 (expect_column_values_to_be_between): kwargs:" in message
    assert f"{f}: expectation #3 (expect_column_values_to_not_be_null): kwargs: unknown column 'merchant'" in message
    assert f"{f}: expectation #4 (expect_column_max_to_be_between): kwargs: unknown $PARAMETER 'today'" in message
    assert f"{f}: expectation #5 (expect_column_values_to_not_be_null): mata: unknown key" in message
    assert "expectations/merchant_profile_features.yml: suite: expectations: must be a non-empty list" in message
    assert "expectations/user_features.json: suite: file name: no feature view named 'user_features'" in message
    assert "expectations/product_sales_features.json: suite: file: cannot parse it:" in message
    assert "expectations/merchant_risk_features.json: suite: tags: unknown key" in message
    assert "expectations/merchant_risk_features.json: suite: name: 'merchant_risk' differs" in message


def test_great_expectations_own_export_validates_unchanged(duck_project):
    """A suite written by GX's own API and exported with ExpectationSuite.to_json_dict() (suite and expectation
    ids, meta with the GX version, notes, severity, description, cached rendered content) is used as it is;
    a key GX would not write is still an error."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    context = gx.get_context(mode="ephemeral")
    suite = context.suites.add(gx.ExpectationSuite(name="merchant_risk_features", meta={"owner": "risk"}, notes="From GX."))
    for expectation in (
        gxe.ExpectColumnValuesToNotBeNull(column="merchant_id", notes="the entity key", severity="warning"),
        gxe.ExpectColumnValuesToBeBetween(column="chargeback_rate_30d", min_value=0, max_value=1, meta={"why": "a rate"}),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="not empty"),
        gxe.ExpectColumnMaxToBeBetween(column="event_timestamp", min_value={"$PARAMETER": "now_minus_2d"}),
        gxe.ExpectColumnValuesToBeBetween(column="refund_rate_30d", max_value=-1),  # fails: rates are >= 0
    ):
        suite.add_expectation(expectation).render()  # render(): GX caches rendered_content and exports it
    exported = suite.to_json_dict()
    assert exported["id"] and exported["meta"]["great_expectations_version"].startswith("1.24")
    assert all(e["id"] and e["rendered_content"] and e["severity"] for e in exported["expectations"])
    write_suite(duck_project, "merchant_risk_features.json", exported)

    (result,) = quality.validate(duck_project, ["merchant_risk_features"], now=NOW)
    assert [(r.expectation, r.column, r.status) for r in result.results] == [
        ("expect_column_values_to_not_be_null", "merchant_id", "passed"),
        ("expect_column_values_to_be_between", "chargeback_rate_30d", "passed"),
        ("expect_table_row_count_to_be_between", None, "passed"),
        ("expect_column_max_to_be_between", "event_timestamp", "passed"),
        ("expect_column_values_to_be_between", "refund_rate_30d", "failed"),
    ]
    exported["expectations"][1]["severty"] = "warning"
    exported["labels"] = []
    write_suite(duck_project, "merchant_risk_features.json", exported)
    message = load_problems(duck_project)
    assert "expectation #2 (expect_column_values_to_be_between): severty: unknown key" in message
    assert "expectations/merchant_risk_features.json: suite: labels: unknown key" in message


def test_suite_keys_are_great_expectations_own():
    from great_expectations.core.expectation_suite import ExpectationSuiteSchema
    from great_expectations.expectations.expectation_configuration import ExpectationConfigurationSchema

    assert suites.SUITE_KEYS == set(ExpectationSuiteSchema().fields)
    assert suites.ENTRY_KEYS == set(ExpectationConfigurationSchema().fields)


def test_yaml_suites_load_like_json(duck_project):
    (duck_project.project_dir / "expectations" / "merchant_profile_features.json").unlink()
    write_suite(
        duck_project,
        "merchant_profile_features.yml",
        "expectations:\n  - type: expect_column_values_to_be_in_set\n    kwargs: {column: risk_tier, value_set: [low, medium]}\n",
    )
    (result,) = quality.validate(duck_project, ["merchant_profile_features"], now=NOW)
    (bad,) = result.failures
    assert result.suite_file == "expectations/merchant_profile_features.yml"
    assert bad.column == "risk_tier" and bad.sample_values == ["high"]


@pytest.mark.parametrize(
    "name, should",
    [
        ("user_merchant_features.JSON", "user_merchant_features.json"),
        ("user_merchant_features.jsn", "user_merchant_features.json"),
        ("sub/user_merchant_features.yml", "user_merchant_features.yml"),
    ],
)
def test_a_misnamed_suite_is_refused_not_skipped(duck_project, name, should):
    """A suite featsync would not read once made its view 'no suite', so push sent it ungated."""
    folder = duck_project.project_dir / "expectations"
    good = folder / "user_merchant_features.json"
    (folder / name).parent.mkdir(exist_ok=True)
    good.rename(folder / name)
    expected = f"expectations/{name}: suite: file name: not read as a suite"
    code, _, err = run_cli("validate", "--project-dir", str(duck_project.project_dir), "-s", "user_merchant_features")
    assert code == 2 and expected in err and f"e.g. to expectations/{should})" in err, err
    assert expected in load_problems(duck_project)
    with pytest.raises(DeclarationError, match="not read as a suite"):
        suites.suite_file_of(duck_project, "user_transaction_features")  # the row push API's lookup


def test_documentation_may_sit_next_to_the_suites(duck_project):
    assert (duck_project.project_dir / "expectations" / "README.md").is_file()
    (duck_project.project_dir / "expectations" / ".gitkeep").write_text("")
    (duck_project.project_dir / "expectations" / ".user_merchant_features.json.swp").write_text("")  # an editor's
    assert suites.stray_files(duck_project.project_dir) == []


# -- the push gate (DuckDB) -------------------------------------------------------


@pytest.fixture
def prefix(redis_url) -> Iterator[str]:
    name = f"featsync-gate-{uuid.uuid4().hex[:8]}"
    yield name
    delete_pushed_keys(Project.open(ROOT), redis.Redis.from_url(redis_url), name)


def online_keys(redis_url: str, prefix: str) -> dict[str, int]:
    """Entity keys per feature view; a view's state hash (fs:<view id>, no ':' after it) counts under '_state'."""
    counts: dict[str, int] = {}
    for view, keys in pushed_keys(Project.open(ROOT), redis.Redis.from_url(redis_url), prefix).items():
        for key in keys:
            name = view if key.count(b":") >= 2 else "_state"
            counts[name] = counts.get(name, 0) + 1
    return counts


def state_views(redis_url: str, prefix: str) -> set[str]:
    """The feature views with a push state under `prefix`."""
    by_view = pushed_keys(Project.open(ROOT), redis.Redis.from_url(redis_url), prefix)
    return {view for view, keys in by_view.items() if any(key.count(b":") == 1 for key in keys)}


def push_args(project: Project, redis_url: str, prefix: str, *extra: str) -> list[str]:
    return [
        "push",
        "--project-dir",
        str(project.project_dir),
        "--redis-url",
        redis_url,
        "--key-prefix",
        prefix,
        "--now",
        NOW,
        *extra,
    ]


def test_push_gate_holds_back_failing_views(duck, duck_project, redis_url, prefix):
    # only merchant_profile_features has rows that have not expired by today's clock (no ttl), so
    # it is the view whose keys show that passing views are still pushed
    corrupt_duckdb(duck[1], [CORRUPT[0], CORRUPT[3]])  # NULL user ids; a bad merchant category
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix))
    assert code == CHECK_FAILED_EXIT
    assert "quality gate failed (not pushed: merchant_profile_features, user_transaction_features)" in err
    assert "FAIL  #8 column_values_to_be_in_set [category]" in err
    assert "NOT PUSHED" in out
    assert online_keys(redis_url, prefix) == {"_state": 4}  # the 4 passing views' push state only
    assert state_views(redis_url, prefix) == {
        "merchant_risk_features",
        "product_sales_features",
        "user_last_transaction",
        "user_merchant_features",
    }

    # fixed data: the view goes through
    shutil.copy(duck[2], duck[1])
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--json"))
    assert code == 0, err
    rows = {r["feature_view"]: r for r in json.loads(out)}
    assert rows["merchant_profile_features"]["pushed"] and rows["merchant_profile_features"]["validation"] == "passed"
    assert rows["merchant_profile_features"]["keys_written"] == 40
    assert online_keys(redis_url, prefix)["merchant_profile_features"] == 40

    # broken again, with values that would change what is online: Redis stays byte for byte as it was
    client = redis.Redis.from_url(redis_url)
    merchant_keys = pushed_keys(Project.open(ROOT), client, prefix, ("merchant_profile_features",))["merchant_profile_features"]
    before = {k: client.dump(k) for k in merchant_keys}
    assert len(before) == 41  # 40 entities and the view's push state
    corrupt_duckdb(
        duck[1], ["update main.merchant_profile_features set risk_tier = 'extreme', category = 'casino', event_timestamp = now()"]
    )
    code, out, err = run_cli(
        *push_args(duck_project, redis_url, prefix, "--select", "merchant_profile_features", "--full-refresh")
    )
    assert code == CHECK_FAILED_EXIT and "not pushed: merchant_profile_features" in err
    merchant_keys = pushed_keys(Project.open(ROOT), client, prefix, ("merchant_profile_features",))["merchant_profile_features"]
    after = {k: client.dump(k) for k in merchant_keys}
    assert after == before


def test_push_fail_fast_pushes_nothing_and_skip_validation_is_explicit(duck, duck_project, redis_url, prefix):
    corrupt_duckdb(duck[1], [CORRUPT[4]])  # duplicates in user_merchant_features only
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--fail-fast", "--json"))
    assert code == CHECK_FAILED_EXIT and "--fail-fast: nothing was pushed" in err
    assert {r["feature_view"]: r["validation"] for r in json.loads(out)}["user_merchant_features"] == "failed"
    assert not any(r["pushed"] for r in json.loads(out))
    assert online_keys(redis_url, prefix) == {}

    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--select", "merchant_profile_features"))
    assert code == 0 and online_keys(redis_url, prefix)["merchant_profile_features"] == 40  # the selection passes

    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--skip-validation", "--json"))
    assert code == 0, err
    assert {r["validation"] for r in json.loads(out)} == {"skipped"} and all(r["pushed"] for r in json.loads(out))
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--skip-validation"))
    assert code == 0 and "validation skipped (--skip-validation)" in out


def test_an_incremental_push_validates_only_views_with_something_new(duck, duck_project, redis_url, prefix):
    """Nothing new since the last push: not validated again ('unchanged'), still pushed. A row that
    lands later at the very instant of the watermark, or a newer one, makes its view validated."""
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--json"))
    assert code == 0 and {r["validation"] for r in json.loads(out)} == {"passed"}, err
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--json"))
    rows = {r["feature_view"]: r for r in json.loads(out)}
    assert code == 0 and {r["validation"] for r in rows.values()} == {"unchanged"} and all(r["pushed"] for r in rows.values())
    assert not rows["merchant_profile_features"]["full_refresh"]
    corrupt_duckdb(
        duck[1],
        [
            # a merchant landing at the watermark's instant (merchant_profile_features' marker is its event time)
            "insert into {s}.merchant_profile_features select * replace ('m9999' as merchant_id) "
            "from {s}.merchant_profile_features order by event_timestamp desc limit 1",
            # newer and bad: a negative count changed after the last push (the example's latest change is 2024-05-06)
            "update {s}.user_transaction_features set transaction_count_7d = -1, created_timestamp = timestamp '2024-05-07'"
            " where user_id = 'u0010'",
        ],
    )
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--json"))
    rows = {r["feature_view"]: r for r in json.loads(out)}
    assert code == CHECK_FAILED_EXIT and "not pushed: user_transaction_features" in err, out
    assert {name: r["validation"] for name, r in rows.items()} == {
        "merchant_profile_features": "passed",
        "merchant_risk_features": "unchanged",
        "product_sales_features": "unchanged",
        "user_last_transaction": "unchanged",
        "user_merchant_features": "unchanged",
        "user_transaction_features": "failed",
    }
    assert rows["merchant_profile_features"]["pushed"] and not rows["user_transaction_features"]["pushed"]
    # --full-refresh validates everything again
    code, out, err = run_cli(
        *push_args(duck_project, redis_url, prefix, "--json", "--full-refresh", "--select", "tag:*,merchant_*")
    )
    assert code == 2 and json.loads(out)["error"]["kind"] == "not_found"  # the example has no dbt tags
    code, out, err = run_cli(*push_args(duck_project, redis_url, prefix, "--json", "--full-refresh", "--select", "merchant_*"))
    assert code == 0 and {r["validation"] for r in json.loads(out)} == {"passed"}


def test_views_without_a_suite_are_reported_and_pushed(duck_project, redis_url, prefix):
    (duck_project.project_dir / "expectations" / "merchant_profile_features.json").unlink()
    code, out, _ = run_cli("validate", "--project-dir", str(duck_project.project_dir), "--now", NOW)
    assert code == 0 and "merchant_profile_features: no suite (add expectations/merchant_profile_features.json)" in out
    code, out, _ = run_cli(*push_args(duck_project, redis_url, prefix, "--select", "merchant_profile_features", "--json"))
    assert code == 0 and json.loads(out)[0]["validation"] == "no_suite"


# -- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(postgres_build, pg_dsn, tmp_path_factory) -> Iterator[tuple[Project, str, str, Any]]:
    """A project copy whose target schema is a private one holding copies of the feature views."""
    import psycopg2

    schema = f"featsync_gate_{uuid.uuid4().hex[:8]}"
    con = psycopg2.connect(**pg_dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'create schema "{schema}"')
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FEATSYNC_PG_SCHEMA", schema)
            project = Project.open(copy_project(tmp_path_factory.mktemp("quality-pg") / "project"), None, "postgres")
            project.registry()
            yield project, schema, postgres_build.schema, con
    finally:
        with con.cursor() as cur:
            cur.execute(f'drop schema if exists "{schema}" cascade')
        con.close()


@pytest.fixture
def pg_project(pg) -> Project:
    project, schema, source, con = pg
    with con.cursor() as cur:
        for view in VIEWS:
            cur.execute(f'drop table if exists "{schema}".{view}')
            cur.execute(f'create table "{schema}".{view} as select * from "{source}".{view}')
    return project


def corrupt_postgres(pg, statements=CORRUPT) -> None:
    _, schema, _, con = pg
    with con.cursor() as cur:
        for sql in statements:
            cur.execute(sql.format(s=f'"{schema}"'))


def test_example_suites_pass_on_postgres(pg_project):
    results = quality.validate(pg_project, now=NOW)
    assert all(r.status == "passed" and r.engine == "postgres" for r in results), "\n".join(report.report_lines(results))
    assert {r.feature_view: len(r.results) for r in results} == SUITE_SIZES
    assert by_view(results)["product_sales_features"].rows_total == 9107


def test_corrupted_views_fail_on_postgres(pg, pg_project):
    corrupt_postgres(pg)
    assert_corruption_found(quality.validate(pg_project, now=NOW))


def test_push_gate_on_postgres(pg, pg_project, redis_url, prefix):
    corrupt_postgres(pg, [CORRUPT[3]])  # a bad merchant category
    code, out, err = run_cli(*push_args(pg_project, redis_url, prefix, "--target", "postgres", "--json"))
    assert code == CHECK_FAILED_EXIT and "not pushed: merchant_profile_features" in err
    rows = {r["feature_view"]: r for r in json.loads(out)}
    assert not rows["merchant_profile_features"]["pushed"]
    assert any("[category]" in f for f in rows["merchant_profile_features"]["failures"])
    assert "merchant_profile_features" not in online_keys(redis_url, prefix)
    assert rows["merchant_risk_features"]["pushed"]


def test_missing_table_is_a_clear_error(duck, duck_project, pg, pg_project):
    with duckdb.connect(str(duck[1])) as con:
        con.execute("drop table product_sales_features")
    code, _, err = run_cli("validate", "--project-dir", str(duck_project.project_dir), "--now", NOW)
    assert code == 1 and "cannot read feature view 'product_sales_features'" in err and "product_sales_features" in err
    _, schema, _, con = pg
    with con.cursor() as cur:
        cur.execute(f'drop table "{schema}".product_sales_features')
    with pytest.raises(FeatsyncError, match="cannot read feature view 'product_sales_features'"):
        quality.validate(pg_project, ["product_sales_features"], now=NOW)


def test_sample_row_count_bounds_round_inwards_exactly():
    from fractions import Fraction

    suite = suites.Suite(
        "v",
        "expectations/v.json",
        (
            {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1000, "max_value": 5000}},
            {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 3000}},
        ),
        frozenset(),
    )
    between, equal = suite.to_gx(Fraction(1, 3)).expectations
    assert (between.min_value, between.max_value) == (334, 1666)  # n >= 333.3 <=> n >= 334
    assert (equal.min_value, equal.max_value) == (1000, 1000)  # 3000 rows, a third sampled: exactly 1000
    assert suite.to_gx().expectations[1].value == 3000  # unsampled: as written
