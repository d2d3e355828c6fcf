"""Run by .venv-feast's python (tests/test_feast_sdk.py): the real Feast SDK against `featsync serve`.

Usage: python client.py REPO_DIR < cases.json, where REPO_DIR holds feature_store.yaml and
repo.py, and each case is {"name", "features" | "feature_service", "entity_rows",
"full_feature_names"}. Applies the repo to Feast's local registry file, then prints, per case,
what Feast's OnlineResponse holds: to_dict() and the FieldStatus name of every value; or, for a
request that fails, the error Feast raised and the exception Feast's own
FeastError.from_error_detail rebuilds from the server's error body. A case with "online_read"
(a view and its features) goes through RemoteOnlineStore.online_read instead, the per-view read,
the one path whose parser reads `event_timestamps`.
"""

import json
import sys
from pathlib import Path

from feast import FeatureStore
from feast.errors import FeastError
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type


def main() -> None:
    repo = Path(sys.argv[1])
    sys.path.insert(0, str(repo))
    import repo as definitions

    store = FeatureStore(repo_path=str(repo))
    objects = [
        definitions.user,
        definitions.merchant,
        definitions.user_transaction_features,
        definitions.merchant_risk_features,
        definitions.user_merchant_features,
        definitions.merchant_profile_features,
        definitions.fraud_detection_v2,
        definitions.fraud_detection,
    ]
    store.apply(objects)
    out = {}
    for case in json.load(sys.stdin):
        if "online_read" in case:
            view, features = case["online_read"]
            keys = [
                EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=row["user_id"])]) for row in case["entity_rows"]
            ]
            rows = store._get_provider().online_store.online_read(store.config, store.get_feature_view(view), keys, features)
            out[case["name"]] = [
                [None if ts is None else ts.isoformat(), {k: feast_value_type_to_python_type(v) for k, v in values.items()}]
                for ts, values in rows
            ]
            continue
        if "feature_service" in case:
            features = store.get_feature_service(case["feature_service"])
        else:
            features = case["features"]
        try:
            response = store.get_online_features(
                features=features, entity_rows=case["entity_rows"], full_feature_names=case.get("full_feature_names", False)
            )
        except RuntimeError as exc:  # Feast 0.67's remote client: "Failed to get online features: <code> <body>"
            body = str(exc).split(" ", 6)[-1]
            rebuilt = FeastError.from_error_detail(body)
            out[case["name"]] = {"error": str(exc), "rebuilt": [type(rebuilt).__name__, str(rebuilt)]}
            continue
        names = list(response.proto.metadata.feature_names.val)
        statuses = {
            name: [FieldStatus.Name(s) for s in result.statuses]
            for name, result in zip(names, response.proto.results, strict=True)
        }
        out[case["name"]] = {"names": names, "values": response.to_dict(), "statuses": statuses}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
