"""The registry read from the real manifest, and every invalid declaration it must reject."""

from __future__ import annotations

import copy
import json

import pytest

from featsync.errors import DeclarationError, NotFoundError
from featsync.registry import Registry, format_duration, parse_duration

UTF = "model.featsync.user_transaction_features"
V1 = "exposure.featsync.fraud_detection_v1"


@pytest.fixture(scope="module")
def manifest(duckdb_build) -> dict:
    with (duckdb_build.target_path / "manifest.json").open() as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def registry(manifest) -> Registry:
    return Registry.from_manifest(manifest)


def test_feature_views_are_typed_from_yaml(registry):
    assert set(registry.feature_views) == {
        "user_transaction_features",
        "user_merchant_features",
        "merchant_risk_features",
        "product_sales_features",
        "merchant_profile_features",
        "user_last_transaction",  # the streaming example (models/streaming)
    }
    view = registry.feature_view("user_transaction_features")
    assert view.entities == ("user_id",)
    assert view.timestamp == "event_timestamp"
    assert view.created_timestamp == "created_timestamp"
    assert view.ttl_seconds == 90 * 86400
    assert view.online is True and view.version == 1
    assert view.owner == "risk-team@example.com"
    assert view.tags == {"domain": "user_behavior", "pii": "false"}
    assert view.column("transaction_count_7d").data_type == "bigint"
    assert "user_id" not in view.feature_names and "event_timestamp" not in view.feature_names
    assert "user_transaction_features" in view.relation
    profile = registry.feature_view("merchant_profile_features")
    assert profile.valid_to == "valid_to" and profile.ttl_seconds is None
    assert profile.feature_names == ("category", "risk_tier")


def test_entities_come_from_the_key_columns(registry):
    assert set(registry.entities) == {"user_id", "merchant_id", "product_id"}
    assert registry.entity("merchant_id").data_type == "text"
    assert set(registry.entity("user_id").feature_views) == {
        "user_transaction_features",
        "user_merchant_features",
        "user_last_transaction",
    }
    assert registry.feature_view("user_merchant_features").entities == ("user_id", "merchant_id")


def test_services_are_versioned_exposures(registry):
    assert registry.service("fraud_detection").version == 3  # latest by default
    v1 = registry.service("fraud_detection:v1")
    assert v1.exposure == "fraud_detection_v1" and registry.service("fraud_detection_v1") == v1
    assert [str(r) for r in v1.features][:2] == [
        "user_transaction_features:transaction_count_7d",
        "user_transaction_features:transaction_count_30d",
    ]
    assert registry.service("fraud_detection:v2").feature_views == (
        "user_transaction_features",
        "merchant_risk_features",
        "user_merchant_features",
        "merchant_profile_features",
    )
    v3 = registry.service("fraud_detection:v3")  # v2 plus the streaming view's features
    assert [str(r) for r in v3.features] == [*map(str, registry.service("fraud_detection:v2").features)] + [
        "user_last_transaction:last_amount",
        "user_last_transaction:last_merchant_id",
    ]
    assert v3.feature_views[-1] == "user_last_transaction"
    with pytest.raises(NotFoundError, match="no feature service named 'fraud:v9'"):
        registry.service("fraud:v9")


def test_lineage_and_usage(registry):
    upstream = registry.upstream("model.featsync.merchant_profile_features")
    assert upstream == ["snapshot.featsync.merchants_snapshot", "model.featsync.stg_merchants", "seed.featsync.raw_merchants"]
    assert registry.used_by("merchant_profile_features")["services"] == ["fraud_detection_v2", "fraud_detection_v3"]
    assert registry.used_by("user_last_transaction")["services"] == ["fraud_detection_v3"]


# -- invalid declarations: each names the file, the node and the key -------------------


def rejected(manifest: dict, mutate) -> str:
    broken = copy.deepcopy(manifest)
    mutate(broken)
    with pytest.raises(DeclarationError) as info:
        Registry.from_manifest(broken)
    return str(info.value)


def fv(manifest: dict, uid: str = UTF) -> dict:
    return manifest["nodes"][uid]["config"]["meta"]["feature_view"]


def fs(manifest: dict, uid: str = V1) -> dict:
    return manifest["exposures"][uid]["config"]["meta"]["feature_service"]


WHERE_FV = "models/features/user_transaction_features.yml: model 'user_transaction_features'"
WHERE_FS = "models/features/_feature_services.yml: exposure 'fraud_detection_v1'"


def test_unknown_entity_column(manifest):
    message = rejected(manifest, lambda m: fv(m).update(entities=["customer_id"]))
    assert f"{WHERE_FV}: feature_view.entities: unknown entity column 'customer_id'" in message
    assert "declared columns: user_id, event_timestamp" in message


def test_missing_timestamp(manifest):
    message = rejected(manifest, lambda m: fv(m).pop("timestamp"))
    assert f"{WHERE_FV}: feature_view.timestamp: missing" in message


def test_timestamp_column_not_declared(manifest):
    message = rejected(manifest, lambda m: fv(m).update(timestamp="ts"))
    assert f"{WHERE_FV}: feature_view.timestamp: column 'ts' is not declared" in message


def test_zoned_timestamps_are_accepted(manifest):
    zoned = copy.deepcopy(manifest)
    zoned["nodes"][UTF]["columns"]["event_timestamp"]["data_type"] = "timestamptz"
    zoned["nodes"][UTF]["columns"]["created_timestamp"]["data_type"] = "timestamp with time zone"
    view = Registry.from_manifest(zoned).feature_view("user_transaction_features")
    assert view.column("event_timestamp").type.zoned and view.column("created_timestamp").type.zoned


def test_time_columns_must_be_timestamps(manifest):
    def dated(m):
        m["nodes"][UTF]["columns"]["event_timestamp"]["data_type"] = "date"

    message = rejected(manifest, dated)
    assert f"{WHERE_FV}: feature_view.timestamp: column 'event_timestamp' has type 'date'" in message
    assert "cast(event_timestamp as timestamp)" in message


def test_unreadable_data_type(manifest):
    def typo(m):
        m["nodes"][UTF]["columns"]["transaction_count_7d"]["data_type"] = "bigintt"

    message = rejected(manifest, typo)
    assert f"{WHERE_FV}: columns.transaction_count_7d.data_type: 'bigintt' is not a SQL data type" in message


def test_unsafe_column_names_are_refused(manifest):
    """Names from YAML are written into SQL unquoted, so unsafe ones never load (registry/identifiers.py)."""

    def hostile(m):
        columns = m["nodes"][UTF]["columns"]
        columns['label"; drop table t; --'] = {"name": 'label"; drop table t; --', "data_type": "text"}
        columns["select"] = {"name": "select", "data_type": "bigint"}
        columns["Amount"] = {"name": "Amount", "data_type": "bigint"}

    message = rejected(manifest, hostile)
    assert "(3 problems)" in message
    assert (
        f"""{WHERE_FV}: columns.label"; drop table t; --: column name 'label"; drop table t; --' is not a plain SQL name"""
        in message
    )
    assert "columns.select: column name 'select' is a reserved SQL word" in message
    assert "columns.Amount: column name 'Amount' is not a plain SQL name: featsync needs lower-case letters" in message


def test_featsync_s_own_column_names_are_refused(manifest):
    """The macros' helper columns are featsync_*: a feature of that name was joined on instead
    of the event time (featsync_asof), or filtered the latest row (featsync_pick)."""

    def own(m):
        m["nodes"][UTF]["columns"]["featsync_asof"] = {"name": "featsync_asof", "data_type": "timestamp"}

    message = rejected(manifest, own)
    assert (
        f"{WHERE_FV}: columns.featsync_asof: column name 'featsync_asof' starts with 'featsync_', which featsync reserves"
        in message
    )


def test_online_decimal_features_are_refused_offline_ones_kept(manifest):
    def money(m):
        m["nodes"][UTF]["columns"]["amount_sum_7d"]["data_type"] = "numeric(12,2)"

    message = rejected(manifest, money)
    assert f"{WHERE_FV}: columns.amount_sum_7d.data_type: online feature: type 'numeric(12,2)' is a decimal" in message
    assert "cast(x as double precision)" in message
    offline = copy.deepcopy(manifest)
    money(offline)
    fv(offline).update(online=False)
    assert (
        Registry.from_manifest(offline).feature_view("user_transaction_features").column("amount_sum_7d").type.kind == "decimal"
    )


def test_entity_keys_are_strings_or_integers(manifest):
    def floating(m):
        m["nodes"][UTF]["columns"]["user_id"]["data_type"] = "double"

    message = rejected(manifest, floating)
    assert f"{WHERE_FV}: feature_view.entities: entity column 'user_id' has type 'double'; entity keys are strings" in message


@pytest.mark.parametrize("ttl", ["9x", "90 days", "-5", "1.5d", True])
def test_bad_ttl(manifest, ttl):
    message = rejected(manifest, lambda m: fv(m).update(ttl=ttl))
    assert f"{WHERE_FV}: feature_view.ttl:" in message


def test_unknown_key_and_bad_types(manifest):
    message = rejected(manifest, lambda m: fv(m).update(tll="90d", online="yes", version=0))
    assert f"{WHERE_FV}: feature_view.tll: unknown key" in message
    assert "feature_view.online: must be true or false, got 'yes'" in message
    assert "feature_view.version: must be a whole number >= 1, got 0" in message


def test_service_feature_that_does_not_exist(manifest):
    message = rejected(manifest, lambda m: fs(m)["features"].append("user_transaction_features:nope"))
    assert f"{WHERE_FS}: feature_service.features: 'user_transaction_features:nope': feature view " in message
    assert "has no feature 'nope'" in message
    message = rejected(manifest, lambda m: fs(m)["features"].append("ghost_features:x"))
    assert "'ghost_features:x': no feature view named 'ghost_features'" in message


def test_duplicate_feature_names_in_service(manifest):
    message = rejected(manifest, lambda m: fs(m)["features"].append("user_transaction_features:transaction_count_7d"))
    assert f"{WHERE_FS}: feature_service.features: duplicate feature name 'transaction_count_7d': it is listed twice" in message

    def collide(m):
        m["nodes"]["model.featsync.merchant_risk_features"]["columns"]["transaction_count_7d"] = {
            "name": "transaction_count_7d",
            "data_type": "bigint",
            "description": "",
        }
        fs(m)["features"].append("merchant_risk_features:transaction_count_7d")

    message = rejected(manifest, collide)
    assert (
        "duplicate feature name 'transaction_count_7d': it is provided by both "
        "'user_transaction_features:transaction_count_7d' and 'merchant_risk_features:transaction_count_7d'"
    ) in message


def test_service_must_depend_on_its_views(manifest):
    def drop(m):
        m["exposures"][V1]["depends_on"]["nodes"].remove("model.featsync.merchant_risk_features")

    assert "depends_on lacks ref('merchant_risk_features')" in rejected(manifest, drop)


@pytest.mark.parametrize("name", ["fraud:v9", "fraud detection", "", 7])
def test_service_names_cannot_hide_a_version(manifest, name):
    """`name:vN` picks a version wherever a service is named: a name with ':' (or a space) is refused."""
    message = rejected(manifest, lambda m: fs(m).update(name=name))
    assert (
        f"{WHERE_FS}: feature_service.name: must be letters, digits, _, - and . "
        f"(requests pick a version as name:vN), got {name!r}" in message
    )


def test_service_versions_are_unique(manifest):
    message = rejected(manifest, lambda m: fs(m, "exposure.featsync.fraud_detection_v2").update(version=1))
    assert "fraud_detection v1 is also declared by exposure" in message


def test_entity_types_must_agree(manifest):
    def retype(m):
        m["nodes"]["model.featsync.user_merchant_features"]["columns"]["user_id"]["data_type"] = "bigint"

    assert "entity 'user_id' has different types across feature views" in rejected(manifest, retype)


def test_entity_type_aliases_agree(manifest):
    """varchar, text and varchar(n) are one type to every engine: not an error."""
    aliased = copy.deepcopy(manifest)
    aliased["nodes"]["model.featsync.user_merchant_features"]["columns"]["user_id"]["data_type"] = "varchar"
    aliased["nodes"][UTF]["columns"]["user_id"]["data_type"] = "character varying(32)"
    assert Registry.from_manifest(aliased).entity("user_id").feature_views


def test_every_problem_is_reported_at_once(manifest):
    def many(m):
        fv(m, "model.featsync.product_sales_features").update(ttl="soon")
        fs(m)["features"].append("merchant_risk_features:nope")

    message = rejected(manifest, many)
    assert "(2 problems)" in message, message
    assert "model 'product_sales_features': feature_view.ttl: 'soon' is not a duration" in message
    assert "has no feature 'nope'" in message


def test_services_of_an_invalid_view_are_not_reported_twice(manifest):
    message = rejected(manifest, lambda m: fv(m).update(ttl="soon"))
    assert "(1 problem)" in message and "no feature view named" not in message


def test_a_feature_view_declared_twice_is_refused(manifest):
    """A local package's model with the project's view name once replaced it silently."""
    dup = "model.visitors.user_transaction_features"

    def twice(m):
        node = copy.deepcopy(m["nodes"][UTF])
        node.update(unique_id=dup, package_name="visitors", patch_path="visitors://models/visitors.yml")
        m["nodes"][dup] = node

    message = rejected(manifest, twice)
    assert "(1 problem)" in message, message
    assert (
        "feature view 'user_transaction_features' is declared twice: "
        f"{UTF} (models/features/user_transaction_features.yml) and {dup} (models/visitors.yml)"
    ) in message
    assert "depends_on" not in message and "no feature view named" not in message


@pytest.mark.parametrize("spec, got", [(None, "null"), (True, "true"), ([], "list")])
def test_feature_view_must_be_a_mapping(manifest, spec, got):
    """`feature_view:` with nothing under it (a mis-indented block) is null: refused, not skipped."""
    message = rejected(manifest, lambda m: m["nodes"][UTF]["config"]["meta"].update(feature_view=spec))
    assert f"{WHERE_FV}: feature_view: must be a mapping, got {got}" in message


# -- durations: one grammar, parsed identically in Python and in the dbt macro -----------------

DURATIONS = [
    ("90d", 7776000),
    ("12h", 43200),
    ("30m", 1800),
    ("45s", 45),
    ("3600", 3600),
    (86400, 86400),
    ("7D", 604800),
    (" 2d ", 172800),
    (None, None),
    ("", None),
    (0, None),
    ("0d", None),
    ("36500d", 3153600000),  # the longest: 100 years
    (3153600000, 3153600000),
    (90.0, 90),
]
# Refused by both: typos, spaces inside, non-ASCII digits, booleans, and anything longer than
# 100 years (the engines' interval arithmetic overflows: '999999999999999d' once reached it).
BAD_DURATIONS = [
    "9x",
    "d",
    "1.5d",
    "-1d",
    "90 days",
    "90 d",
    "٩٠d",
    "²d",
    "+90d",
    True,
    -5,
    1.5,
    "36501d",
    3153600001,
    "999999999999999d",
]


@pytest.mark.parametrize("value, seconds", DURATIONS)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [*BAD_DURATIONS, float("inf"), float("nan")])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match="not a duration|not a whole number|is negative|longer than 36500d"):
        parse_duration(value)


def test_format_duration():
    assert [format_duration(s) for s in (None, 7776000, 43200, 90, 1800)] == ["none", "90d", "12h", "90s", "30m"]


def test_macro_parses_durations_like_python(duckdb_build):
    calls = ", ".join(
        f"featsync.duration_seconds({v!r})" if v is not None else "featsync.duration_seconds(none)" for v, _ in DURATIONS
    )
    result = duckdb_build.project.run_dbt(
        ["compile", "--inline", f"select '{{{{ [{calls}] | tojson }}}}'"], target_path=duckdb_build.scratch_path
    )
    compiled = result.result.results[0].node.compiled_code
    assert json.loads(compiled.split("'")[1]) == [s for _, s in DURATIONS]
    from featsync.errors import DbtError

    for bad in BAD_DURATIONS:
        with pytest.raises(DbtError, match="is not a duration|whole number of seconds|longer than 36500d"):
            duckdb_build.project.run_dbt(
                ["compile", "--inline", f"select {{{{ featsync.duration_seconds({bad!r}) }}}}"],
                target_path=duckdb_build.scratch_path,
            )
