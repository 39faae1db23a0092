"""The Kubernetes manifests agree with their autoscalers (docs/deployment.md#kubernetes).

No ``replicas`` where an autoscaler owns the count, a PodDisruptionBudget for every process type
that scales out, liveness probes of the process itself, web scaled on its busy workers, and KEDA's
Redis trigger configured from the same settings as the app. Read from the files as written; where
kubectl is on the PATH, its own rendering of the kustomization is checked too.
"""

import ast
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import redis
import yaml

from core.metrics import WEB_WORKERS, web_worker_busy
from tests.deploy.test_release_steps import kustomization, kustomize, manifests
from tests.project.test_settings import settings_value

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


def rendered() -> list[list[dict]]:
    """Return the kustomization as built: by this suite's small kustomize (test_release_steps), and
    by ``kubectl kustomize`` too where kubectl has it."""
    builds = [kustomize(manifests(), kustomization())]
    if shutil.which("kubectl"):
        result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
        if "unknown command" not in result.stderr:
            assert result.returncode == 0, result.stderr
            builds.append([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    return builds


def test_kedas_redis_trigger_reaches_the_apps_redis_with_the_apps_password():
    [configmap] = [doc for doc in documents() if doc["kind"] == "ConfigMap"]
    redis_url = configmap["data"]["REDIS_URL"]
    parts = urlsplit(redis_url)
    # What kustomize can split: no user, password or query in the ConfigMap's URL.
    assert parts.scheme in {"redis", "rediss"} and parts.hostname and parts.port, redis_url
    assert (parts.username, parts.password, parts.query) == (None, None, ""), "the password is REDIS_PASSWORD's"
    for documents_built in rendered():
        [worker] = [d for d in documents_built if d["kind"] == "ScaledObject" and d["metadata"]["name"] == "worker"]
        [trigger] = [t["metadata"] for t in worker["spec"]["triggers"] if t["type"] == "redis"]
        assert trigger["address"] == f"{parts.hostname}:{parts.port}"
        assert trigger["databaseIndex"] == parts.path.strip("/")
        assert trigger["enableTLS"] == str(parts.scheme == "rediss").lower()
        # KEDA resolves the variable from the scale target's container, whose envFrom has the Secret.
        [deployment] = [d for d in documents_built if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert {"secretRef": {"name": "formation-secrets"}} in container["envFrom"]
    # The app, given the same ConfigMap and Secret, connects where KEDA does, with the same password.
    password = "s3cret/with:odd@chars"
    app_url = ast.literal_eval(
        settings_value("REDIS_URL", REDIS_URL=redis_url, **{trigger["passwordFromEnv"]: password})
    )
    options = redis.ConnectionPool.from_url(app_url).connection_kwargs
    assert f"{options['host']}:{options['port']}" == trigger["address"]
    assert (options["db"], options["password"]) == (int(trigger["databaseIndex"]), password)


def test_probes_ask_the_process_itself_and_start_no_django():
    """Liveness asks the process over HTTP (web: /health on its port; the others: /health on their
    METRICS_PORT server, answered from their own loop's heartbeat), never a backing service; no
    probe is a command that starts Django (``manage.py …``: ~1 s of CPU and 66 MiB each time)."""
    for name, deployment in of_kind("Deployment").items():
        # PgBouncer (TCP probes of its own port) and web's proxy (docs/deployment.md) run other images.
        app = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["image"] == "formation"]
        if not app:
            continue
        [container] = app
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
        served = int(env["PORT"] if name == "web" else env["METRICS_PORT"])
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            assert "exec" not in probe, f"{name} {kind}: a command per probe"
            assert ports[probe["httpGet"]["port"]] == served, f"{name} {kind}: not the process's own port"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready", name
        # A stopped process does not answer: it fails within one probe's timeout, under its period.
        liveness = container["livenessProbe"]
        assert liveness.get("timeoutSeconds", 1) < liveness.get("periodSeconds", 10), name


def test_web_scales_on_its_busy_workers_through_the_metric_it_exports():
    """Not on CPU, which a sync worker waiting on PostgreSQL barely uses: on the busy share of its
    gunicorn workers, the formation_web_workers gauge that web's /metrics serves."""
    assert "web" not in {doc["spec"]["scaleTargetRef"]["name"] for doc in of_kind("HorizontalPodAutoscaler").values()}
    scaled = of_kind("ScaledObject")["web"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "web"
    [trigger] = scaled["spec"]["triggers"]  # no CPU or memory trigger beside it
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "Value")
    query = " ".join(trigger["metadata"]["query"].split())
    name = WEB_WORKERS.collect()[0].name  # the metric as the code exports it
    assert query == (f'sum(avg_over_time({name}{{state="busy"}}[2m])) / sum(avg_over_time({name}[2m]))'), (
        "the busy share of web's workers"
    )
    # A share: below 1, so web scales out before every worker is taken and requests queue.
    assert 0 < float(trigger["metadata"]["threshold"]) < 1
    assert trigger["metadata"]["ignoreNullValues"] == "false"  # no sample: the fallback, not 0
    assert scaled["spec"]["fallback"]["behavior"] == "currentReplicasIfHigher"
    assert scaled["spec"]["minReplicaCount"] >= 2  # one pod may be evicted or rolled at any time
    # The label values the query selects are the ones the code sets.
    web_worker_busy(True, path="/")
    assert {sample.labels["state"] for sample in WEB_WORKERS.collect()[0].samples} == {"busy", "idle"}
