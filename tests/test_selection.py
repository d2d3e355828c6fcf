"""--select: dbt's selector syntax over feature views, resolved against a real manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import copy_project
from featsync.cli import main
from featsync.errors import USAGE_EXIT, NotFoundError, UsageError
from featsync.project import Project

ALL = [
    "merchant_profile_features",
    "merchant_risk_features",
    "product_sales_features",
    "user_last_transaction",  # the streaming example, in models/streaming
    "user_merchant_features",
    "user_transaction_features",
]
FEATURES = [v for v in ALL if v != "user_last_transaction"]  # models/features

USER = ["user_merchant_features", "user_transaction_features"]
V1 = ["merchant_risk_features", "user_transaction_features"]  # fraud_detection v1


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """A copy of the example whose user views carry the dbt tag `user` (dbt tags, not featsync's meta tags)."""
    root = copy_project(tmp_path_factory.mktemp("selection") / "project")
    for name in ("user_transaction_features", "user_merchant_features"):
        yml = root / "models" / "features" / f"{name}.yml"
        yml.write_text(
            yml.read_text().replace("    config:\n      meta:", "    config:\n      tags: [user, hourly]\n      meta:", 1)
        )
    project = Project.open(root)
    project.registry()
    return project


def names(project: Project, *selectors: str) -> list[str]:
    return [v.name for v in project.registry().select(selectors)]


def test_default_is_every_view(project):
    assert names(project) == ALL


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (("user_transaction_features",), ["user_transaction_features"]),
        (("merchant_*",), ["merchant_profile_features", "merchant_risk_features"]),
        (("tag:user",), ["user_merchant_features", "user_transaction_features"]),
        (("tag:user,user_m*",), ["user_merchant_features"]),  # intersection
        (("tag:user product_sales_features",), ["product_sales_features", *USER]),  # union
        (("tag:user", "product_sales_features"), ["product_sales_features", *USER]),
        (("path:models/features/merchant_risk_features.sql",), ["merchant_risk_features"]),
        (("path:models/features",), FEATURES),
        (("path:models/streaming",), ["user_last_transaction"]),
        (("service:fraud_detection:v1",), V1),
        (("+exposure:fraud_detection_v2",), ["merchant_profile_features", "merchant_risk_features", "user_merchant_features",
                                             "user_transaction_features"]),
        # The training set model is built on the views its service uses: its ancestors.
        (("+fraud_training_set_v1",), V1),
        (("1+fraud_training_set_v1",), V1),
        # Views downstream of a staging model (through a snapshot), or of its children only.
        (("stg_merchants+",), ["merchant_profile_features"]),
        (("stg_merchants+1",), "nothing"),
        (("stg_transactions+1",), ["merchant_risk_features", "product_sales_features", "user_last_transaction",
                                   "user_merchant_features", "user_transaction_features"]),
    ],
)  # fmt: skip
def test_selectors(project, selectors, expected):
    if expected == "nothing":
        with pytest.raises(NotFoundError, match="matches no feature view"):
            names(project, *selectors)
    else:
        assert names(project, *selectors) == expected


def test_errors(project):
    with pytest.raises(NotFoundError, match="no feature view named 'nope'"):
        names(project, "nope")
    with pytest.raises(NotFoundError, match="selector 'tag:nothing' matches nothing"):
        names(project, "tag:nothing")
    with pytest.raises(NotFoundError, match="selection 'stg_users[*]' matches no feature view"):
        names(project, "stg_users*")
    for bad in ("config:materialized:table", "@stg_users", "source:raw"):
        with pytest.raises(UsageError, match=f"selector '{bad}' is not supported"):
            names(project, bad)


def test_online_views_keep_the_plain_name_check(project):
    registry = project.registry()
    assert [v.name for v in registry.online_views(["tag:user"])] == ["user_merchant_features", "user_transaction_features"]


def run(project: Project, *args: str):
    return CliRunner().invoke(main, [*args, "--project-dir", str(project.project_dir)])


def test_describe_and_drift_take_select(project):
    result = run(project, "describe", "--select", "tag:user", "--json")
    assert result.exit_code == 0, result.output
    assert [d["name"] for d in json.loads(result.output)] == ["user_merchant_features", "user_transaction_features"]
    assert "user_merchant_features (feature view, v1)" in run(project, "describe", "-s", "tag:user").output
    both = run(project, "describe", "user_id", "--select", "tag:user")
    assert both.exit_code == USAGE_EXIT and "not both" in both.output
    window = [
        "--reference",
        "2024-01-01T00:00:00Z..2024-02-01T00:00:00Z",
        "--current",
        "2024-02-01T00:00:00Z..2024-03-01T00:00:00Z",
    ]
    several = run(project, "drift", "--select", "tag:user", *window)
    assert several.exit_code == USAGE_EXIT and "drift compares one feature view; --select picks 2" in several.output
    bad = run(project, "validate", "--select", "config:x")
    assert bad.exit_code == USAGE_EXIT and "selector 'config:x' is not supported" in bad.output


def test_docs_list_the_methods():
    readme = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for form in ("tag:", "path:", "service:", "+exposure:", "NAME+"):
        assert form in readme


OFFLINE_REDIS = ["--redis-url", "redis://127.0.0.1:1/0"]  # never reached: the selector is refused first


@pytest.mark.parametrize(
    "args",
    [
        ["describe", "--json"],
        ["drift", "--reference", "2024-01-01T00:00Z..2024-02-01T00:00Z", "--current", "2024-02-01T00:00Z..2024-03-01T00:00Z"],
        ["validate"],
        ["status", *OFFLINE_REDIS],
        ["verify", *OFFLINE_REDIS],
        ["push", "--dry-run", *OFFLINE_REDIS],
        ["push", "--rows", "rows.csv", *OFFLINE_REDIS],
        ["stream", "--from", "redis://127.0.0.1:1/0/events", *OFFLINE_REDIS],
    ],
)
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_selector_is_a_usage_error_not_every_view(project, tmp_path, monkeypatch, args, empty):
    """An empty --select added nothing to the union, and a union of nothing selected every view."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("user_id\nu1\n")
    for select in (["--select", empty], ["--select", "tag:user", "--select", empty]):
        if args[0] in ("push", "stream") and len(select) > 2:
            continue  # they take one view there
        result = run(project, *args, *select)
        assert result.exit_code == USAGE_EXIT and "empty selector" in result.output, result.output
    with pytest.raises(UsageError, match="empty selector"):
        names(project, empty)
