"""The Kubernetes manifests agree with their autoscalers (docs/deployment.md#kubernetes).

No ``replicas`` where an autoscaler owns the count, a PodDisruptionBudget for every process type
that scales out, liveness probes of the process itself, web scaled on its busy workers, and KEDA's
Redis trigger configured from the same settings as the app. Read from the files as written; where
kubectl is on the PATH, its own rendering of the kustomization is checked too.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def documents() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == kind}


def autoscaled() -> dict[str, str]:
    """Return {Deployment name: the kind of what scales it} for every HPA and ScaledObject."""
    owners = {}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for doc in of_kind(kind).values():
            target = doc["spec"]["scaleTargetRef"]
            assert target.get("kind", "Deployment") == "Deployment", doc["metadata"]["name"]
            owners[target["name"]] = kind
    return owners


def test_no_replicas_where_an_autoscaler_owns_the_count():
    deployments = of_kind("Deployment")
    owners = autoscaled()
    assert {"web", "worker", "mailer"} <= set(owners)
    for name, owner in owners.items():
        assert "replicas" not in deployments[name]["spec"], f"{name}: {owner} owns its count"
    # The others keep theirs: the scheduler runs once, PgBouncer's pool size counts its replicas.
    assert deployments["scheduler"]["spec"]["replicas"] == 1
    assert deployments["pgbouncer"]["spec"]["replicas"] == 2
