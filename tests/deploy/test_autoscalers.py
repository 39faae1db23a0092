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


def minimum_replicas(name: str) -> int:
    """Return the least number of pods the autoscaler of Deployment ``name`` keeps."""
    for doc in of_kind("HorizontalPodAutoscaler").values():
        if doc["spec"]["scaleTargetRef"]["name"] == name:
            return doc["spec"].get("minReplicas", 1)
    for doc in of_kind("ScaledObject").values():
        if doc["spec"]["scaleTargetRef"]["name"] == name:
            return doc["spec"].get("minReplicaCount", 0)
    raise AssertionError(f"no autoscaler for {name}")


def test_every_process_type_that_scales_out_has_a_disruption_budget_that_lets_a_drain_through():
    deployments = of_kind("Deployment")
    budgets = of_kind("PodDisruptionBudget")
    for name in autoscaled():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        covering = [
            budget
            for budget in budgets.values()
            if budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudget(s) select its pods"
        [budget] = covering
        spec = budget["spec"]
        # At the autoscaler's minimum, a drain may still evict one pod (else it waits forever).
        if "minAvailable" in spec:
            assert spec["minAvailable"] < minimum_replicas(name), name
        else:
            assert spec["maxUnavailable"] >= 1, name
    for name in ("worker", "mailer"):
        assert budgets[name]["spec"]["maxUnavailable"] == 1
        assert budgets[name]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
