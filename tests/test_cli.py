"""The featsync CLI end to end: real dbt parse, real manifests, real exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import copy_project
from featsync.cli import main
from featsync.errors import USAGE_EXIT
from featsync.project import Project

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    """A copy of the project whose featsync manifest is parsed once for this module."""
    return copy_project(tmp_path_factory.mktemp("cli") / "project")


def test_list_json(project_dir):
    data = json.loads(run("list", "--project-dir", str(project_dir), "--json").output)
    assert {v["name"] for v in data["feature_views"]} >= {"user_transaction_features", "merchant_risk_features"}
    assert [(s["name"], s["version"]) for s in data["feature_services"]] == [("fraud_detection", v) for v in (1, 2, 3)]
    assert {e["name"] for e in data["entities"]} == {"user_id", "merchant_id", "product_id"}
    assert (project_dir / "target/featsync/default/manifest.json").is_file()


def test_list_table(project_dir):
    output = run("list", "--project-dir", str(project_dir)).output
    for text in (
        "Feature views",
        "user_merchant_features",
        "user_id, merchant_id",
        "Feature services",
        "fraud_detection_v2",
        "Entities",
        "product_id",
    ):
        assert text in output


def test_describe_feature_view(project_dir):
    data = json.loads(run("describe", "merchant_profile_features", "--project-dir", str(project_dir), "--json").output)
    assert data["kind"] == "feature_view" and data["valid_to"] == "valid_to" and data["ttl"] == "none"
    assert data["lineage"]["models"] == ["merchants_snapshot (snapshot)", "stg_merchants (model)", "raw_merchants (seed)"]
    assert data["used_by"]["services"] == ["fraud_detection_v2", "fraud_detection_v3"]
    roles = {c["name"]: (c["role"], c["data_type"]) for c in data["columns"]}
    assert roles["merchant_id"] == ("entity", "text") and roles["risk_tier"] == ("feature", "text")
    table = run("describe", "user_transaction_features", "--project-dir", str(project_dir)).output
    for text in (
        "user_transaction_features (feature view, v1)",
        "[t - window, t]",
        "90d",
        "risk-team@example.com",
        "domain=user_behavior",
        "stg_transactions (model)",
        "fraud_detection_v1",
        "transaction_count_7d",
    ):
        assert text in table


def test_describe_service_and_entity(project_dir):
    v1 = json.loads(run("describe", "fraud_detection:v1", "--project-dir", str(project_dir), "--json").output)
    assert v1["version"] == 1 and len(v1["features"]) == 5
    latest = run("describe", "fraud_detection", "--project-dir", str(project_dir)).output
    assert "fraud_detection (feature service, v3)" in latest and "pair_transaction_count_90d" in latest
    assert "last_amount" in latest  # v3: v2 plus the streaming view
    entity = json.loads(run("describe", "user_id", "--project-dir", str(project_dir), "--json").output)
    assert entity["kind"] == "entity" and entity["data_type"] == "text"


def test_unknown_name_exits_2(project_dir):
    result = run("describe", "nope", "--project-dir", str(project_dir), ok=False)
    assert result.exit_code == 2
    assert "no feature view, feature service or entity named 'nope'" in result.output


def test_not_a_project(tmp_path):
    result = run("list", "--project-dir", str(tmp_path), ok=False)
    assert result.exit_code == 1 and "is not a dbt project" in result.output


def test_manifest_is_reparsed_when_yaml_changes(project_copy):
    project = Project.open(project_copy)
    assert project.manifest_is_stale()
    assert project.registry().feature_view("product_sales_features").ttl_seconds == 30 * 86400
    assert not Project.open(project_copy).manifest_is_stale()
    yml = project_copy / "models/features/product_sales_features.yml"
    yml.write_text(yml.read_text().replace("ttl: 30d", "ttl: 12h"))
    fresh = Project.open(project_copy)
    assert fresh.manifest_is_stale()
    assert fresh.registry().feature_view("product_sales_features").ttl_seconds == 12 * 3600


def test_manifest_is_reparsed_when_a_file_is_deleted_added_or_replaced_by_an_older_one(project_copy):
    """Staleness compared mtimes with the manifest's: a file deleted, or replaced by one with an
    older mtime (cp -p, rsync -a, tar), kept the stale manifest (describe showed the old ttl,
    every command failed on the deleted file). It compares a fingerprint of the files now."""
    import os

    project = Project.open(project_copy)
    assert project.registry().feature_view("product_sales_features").ttl_seconds == 30 * 86400
    yml = project_copy / "models/features/product_sales_features.yml"
    before = yml.stat()
    yml.write_text(yml.read_text().replace("ttl: 30d", "ttl: 12h"))
    os.utime(yml, ns=(before.st_atime_ns, before.st_mtime_ns - 10**12))  # older than the manifest
    fresh = Project.open(project_copy)
    assert fresh.manifest_is_stale()
    assert fresh.registry().feature_view("product_sales_features").ttl_seconds == 12 * 3600
    extra = project_copy / "models/notes.md"
    extra.write_text("{% docs notes %}notes{% enddocs %}\n")
    os.utime(extra, ns=(before.st_atime_ns, before.st_mtime_ns - 10**12))
    assert Project.open(project_copy).manifest_is_stale()  # added
    Project.open(project_copy).registry()
    assert not Project.open(project_copy).manifest_is_stale()
    extra.unlink()
    assert Project.open(project_copy).manifest_is_stale()  # deleted


def test_manifest_is_reparsed_when_an_env_var_of_the_profile_changes(project_copy, monkeypatch):
    """FEATSYNC_PG_SCHEMA (read by profiles.yml) names every Postgres relation: a manifest
    parsed under another schema must not be reused, though no file changed."""
    monkeypatch.setenv("FEATSYNC_PG_SCHEMA", "featsync_env_a")
    project = Project.open(project_copy, target="postgres")
    assert project.registry().feature_view("product_sales_features").relation.startswith('"test"."featsync_env_a"')
    assert not Project.open(project_copy, target="postgres").manifest_is_stale()
    monkeypatch.setenv("FEATSYNC_PG_SCHEMA", "featsync_env_b")
    fresh = Project.open(project_copy, target="postgres")
    assert fresh.manifest_is_stale()
    assert fresh.registry().feature_view("product_sales_features").relation.startswith('"test"."featsync_env_b"')


def test_invalid_yaml_fails_with_file_model_and_key(project_copy):
    yml = project_copy / "models/features/user_merchant_features.yml"
    yml.write_text(yml.read_text().replace("entities: [user_id, merchant_id]", "entities: [user_id, shop_id]"))
    result = run("list", "--project-dir", str(project_copy), ok=False)
    assert result.exit_code == 2
    assert (
        "models/features/user_merchant_features.yml: model 'user_merchant_features': "
        "feature_view.entities: unknown entity column 'shop_id'"
    ) in " ".join(result.output.split())


def test_dbt_parse_errors_are_reported(project_copy):
    (project_copy / "models/features/broken.yml").write_text("models:\n  - name: [unclosed\n")
    result = run("list", "--project-dir", str(project_copy), ok=False)
    assert result.exit_code == 3
    assert "dbt parse failed" in result.output and "broken.yml" in result.output


def test_generate_is_deterministic(tmp_path):
    run("generate", "--out", str(tmp_path / "a"), "--format", "csv")
    run("generate", "--out", str(tmp_path / "b"), "--format", "csv")
    for name in ("raw_transactions", "raw_fraud_labels", "raw_merchants"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
        # The checked-in seeds are exactly scale 1 of the generator.
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (ROOT / "seeds" / f"{name}.csv").read_bytes()
    run("generate", "--out", str(tmp_path / "p"), "--scale", "3", "--seed", "11")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "p" / "raw_transactions.parquet")
    assert table.num_rows == 12000
    assert set(table.column("status").unique().to_pylist()) == {"completed", "refunded", "chargeback"}


# -- exit codes, -h and --json on every command -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--bogus"],  # unknown option
        ["training-set", "--service", "fraud_detection", "--out", "x.parquet"],  # missing --spine
        ["push", "--now", "yesterday"],  # malformed value (click callback)
        ["push", "--now", "2024-01-01T00:00:00"],  # no zone
        ["verify", "--sample", "0"],  # out of range
        ["training-set", "--spine", "s.csv", "--out", "o.parquet", "--features", "fv:x", "--as-of", "later"],  # bad choice
        ["get", "--features", "user_transaction_features:amount_avg_30d", "--entity", "user_id"],  # not KEY=VALUE
        ["get", "--service", "fraud_detection", "--entity", "user_id=u1", "--request", "transaction_amount=lots"],  # bad type
        ["get", "--features", "user_transaction_features:amount_avg_30d", "--entity", "user_id=u1", "--request", "a=1"],
        ["validate", "--select", "@user_transaction_features"],  # selector syntax not supported
        ["describe"],  # neither NAME nor --select
        ["training-set", "--spine", "s.csv", "--out", "o.parquet"],  # neither --service nor --features
        ["training-set", "--spine", "s.csv", "--out", "o.parquet", "--service", "fraud_detection", "--features", "a:b"],
        ["get", "--entity", "user_id=u1"],  # neither
        ["get", "--entity", "user_id=u1", "--service", "fraud_detection", "--features", "a:b"],  # both
    ],
)
def test_every_malformed_option_is_a_usage_error(project_dir, args):
    online = ["--redis-url", "redis://127.0.0.1:1/0"] if args[0] in ("push", "get", "verify") else []
    result = run(*args, "--project-dir", str(project_dir), *online, ok=False)
    assert result.exit_code == USAGE_EXIT, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    if "--spine" in args and "--as-of" not in args or args[:2] == ["get", "--entity"]:
        assert "give exactly one of --service or --features" in result.output, result.output


def test_usage_errors_and_invalid_declarations_are_told_apart(project_copy):
    yml = project_copy / "models/features/user_merchant_features.yml"
    yml.write_text(yml.read_text().replace("entities: [user_id, merchant_id]", "entities: [user_id, shop_id]"))
    assert run("list", "--project-dir", str(project_copy), ok=False).exit_code == 2
    assert run("list", "--project-dir", str(project_copy), "--bogus", ok=False).exit_code == USAGE_EXIT
    data = json.loads(run("list", "--project-dir", str(project_copy), "--json", ok=False).output)["error"]
    assert data["kind"] == "invalid_declarations" and data["exit_code"] == 2
    (problem,) = data["problems"]
    assert problem["file"] == "models/features/user_merchant_features.yml" and problem["key"] == "feature_view.entities"
    assert problem["node"] == "model 'user_merchant_features'" and problem["message"].startswith(
        "unknown entity column 'shop_id'"
    )


def test_errors_are_json_under_json(project_dir, tmp_path):
    result = run("list", "--project-dir", str(tmp_path), "--json", ok=False)
    error = json.loads(result.output)["error"]
    assert result.exit_code == 1 and error["kind"] == "error" and "is not a dbt project" in error["message"]
    result = run("describe", "nope", "--project-dir", str(project_dir), "--json", ok=False)
    assert result.exit_code == 2 and json.loads(result.output)["error"]["kind"] == "not_found"
    result = run("push", "--now", "soon", "--project-dir", str(project_dir), "--json", ok=False)
    error = json.loads(result.output)["error"]
    assert result.exit_code == USAGE_EXIT and error["kind"] == "usage" and "--now" in error["message"]


def test_every_command_has_h_and_json():
    for name, command in main.commands.items():
        result = run(name, "-h")
        assert result.exit_code == 0 and result.output.startswith("Usage:") and f" {name} " in result.output.splitlines()[0]
        options = {opt for param in command.params for opt in param.opts}
        if name not in ("serve", "ui"):  # servers: their output is their log
            assert "--json" in options, name


def test_training_set_and_generate_speak_json(duckdb_build, tmp_path):
    out = tmp_path / "train.parquet"
    result = run(
        "training-set", "--project-dir", str(ROOT), "--target", "dev", "--service", "fraud_detection:v1",
        "--spine", "stg_fraud_labels", "--out", str(out), "--json",
    )  # fmt: skip
    data = json.loads(result.output)
    assert data["out"] == str(out) and data["rows"] > 0 and "transaction_count_7d" in data["columns"] and out.is_file()
    files = json.loads(run("generate", "--out", str(tmp_path / "g"), "--format", "csv", "--json").output)["files"]
    assert {"raw_fraud_labels.csv", "raw_merchants.csv", "raw_transactions.csv"} <= {Path(f).name for f in files}


@pytest.mark.parametrize("name", ["t.csv", "t", "t.parquet.tmp"])
def test_a_training_set_file_not_named_parquet_is_a_usage_error(project_dir, tmp_path, name):
    """--out t.csv wrote parquet bytes into a file named .csv (found by an attack session)."""
    out = tmp_path / name
    args = ["training-set", "--service", "fraud_detection", "--spine", "nope.csv", "--out", str(out)]
    result = run(*args, "--project-dir", str(project_dir), ok=False)
    assert result.exit_code == USAGE_EXIT and "the file is written as parquet; name it *.parquet" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["validate", "--junit"], "/nonexistent/x.xml"),
        (["training-set", "--service", "fraud_detection", "--spine", "nope.csv", "--out"], "/nonexistent/t.parquet"),
        (
            ["drift", "--select", "merchant_risk_features", "--reference", "a..b", "--current", "a..b", "--html"],
            "/nonexistent/x.html",
        ),
        (["generate", "--out"], "/proc/nope"),
    ],
)
def test_an_unwritable_output_path_is_a_usage_error_before_any_work(project_dir, args, path):
    """Checked when the options are parsed (one click type), not by a traceback after the work ran."""
    project = [] if args[0] == "generate" else ["--project-dir", str(project_dir)]
    result = run(*args, path, *project, ok=False)
    assert result.exit_code == USAGE_EXIT and f"cannot write {path}: " in result.output, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    error = json.loads(run(*args, path, *project, "--json", ok=False).output)["error"]
    assert error["kind"] == "usage" and error["exit_code"] == USAGE_EXIT and f"cannot write {path}: " in error["message"]
