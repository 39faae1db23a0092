"""Liveness probes per process type: ``manage.py probe TYPE`` exits 0 only while one is alive; the
Kubernetes and compose probes, run exactly as declared, pass against a formation configured as deployed."""

import http.client
import signal
import subprocess
import sys
import time

import pytest
import yaml

from embedded.harness import ROOT
from embedded.polling import wait_until
from embedded.servers import free_port, port_open
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.startup,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]


def probe(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "probe", kind], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("kind", ["web", "worker", "scheduler", "mailer"])
def test_probe_answers_while_the_process_lives(formation, formation_env, kind):
    before = probe(kind, formation_env)
    assert before.returncode == 1
    assert len(before.stderr.strip().splitlines()) == 1, before.stderr
    process = formation.start(kind)
    alive = probe(kind, formation_env)
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.startswith(f"{kind}: 1 live")
    process.send_signal(signal.SIGTERM)
    assert process.wait() == 0
    assert probe(kind, formation_env).returncode == 1  # a graceful stop leaves no live trace


# --- The deployment files' probes, run as the kubelet and docker run them -----------------------

KUBERNETES = ROOT / "deploy" / "kubernetes"
POD_IP = "10.42.8.201"  # kubelet connects to the pod IP; here only the Host header carries it
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")  # the order kubelet runs them in


def k8s_documents(kind: str) -> list[dict]:
    return [
        doc
        for path in sorted(KUBERNETES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == kind
    ]


# The ConfigMap's addresses of the backing services: in the cluster's names (pgbouncer, redis), which
# this machine cannot resolve. This test's own services stand in for them.
SERVICE_URLS = ("DATABASE_URL", "DATABASE_DIRECT_URL", "DATABASE_GATEWAY_URL", "REDIS_URL")


def configmap_env() -> dict[str, str]:
    """Return the ConfigMap's data, the non-secret environment of every deployed process, but the
    backing services' addresses (SERVICE_URLS)."""
    [configmap] = k8s_documents("ConfigMap")
    return {name: str(value) for name, value in configmap["data"].items() if name not in SERVICE_URLS}


def run_probe(probe: dict, container: dict, env: dict[str, str], port: int) -> tuple[bool, str]:
    """Run one probe as kubelet does; return (success, what it saw).

    httpGet: GET the declared path with the declared headers; without a declared Host header
    kubelet's Go client sends ``<pod IP>:<port>``. The container's port (a number, or a name
    resolved through the container's ports), which must be where the process serves (``PORT`` for
    web, ``METRICS_PORT`` for the others, in ``env``, the pod's environment), is where ``port``
    listens on 127.0.0.1. Success is a status from 200 to 399 within timeoutSeconds (default 1).
    exec: run the command as declared in the container's environment; success is exit 0 within
    timeoutSeconds.
    """
    timeout = probe.get("timeoutSeconds", 1)
    if "httpGet" in probe:
        get = probe["httpGet"]
        named = {entry["name"]: entry["containerPort"] for entry in container.get("ports", []) if "name" in entry}
        container_port = named[get["port"]] if isinstance(get["port"], str) else get["port"]
        served = {int(env[name]) for name in ("PORT", "METRICS_PORT") if env.get(name)}
        assert container_port in served, "the probe's port is the one the process serves (PORT, METRICS_PORT)"
        assert get.get("scheme", "HTTP") == "HTTP", "a TLS probe would need a certificate inside the pod"
        headers = {header["name"]: header["value"] for header in get.get("httpHeaders", [])}
        headers.setdefault("Host", f"{POD_IP}:{container_port}")
        headers.setdefault("User-Agent", "kube-probe/1.33")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.putrequest("GET", get["path"], skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        except OSError as exc:
            return False, f"GET {get['path']}: {exc}"
        finally:
            connection.close()
        return 200 <= response.status < 400, f"GET {get['path']} Host {headers['Host']}: {response.status} {body[:200]}"
    command = probe["exec"]["command"]
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"{command}: no answer within {timeout}s"
    return result.returncode == 0, f"{command}: exit {result.returncode} {result.stdout}{result.stderr}".strip()


def run_probes_as_kubelet(container: dict, env: dict[str, str], port: int) -> dict[str, str]:
    """Run the container's probes in kubelet's order: the startup probe every periodSeconds until it
    passes or failureThreshold is reached, then readiness and liveness once each. Return the
    outcome of each; fail the test naming the first probe that failed."""
    seen = {}
    for kind in PROBES:
        probe = container[kind]
        attempts = probe.get("failureThreshold", 3) if kind == "startupProbe" else 1
        for attempt in range(1, attempts + 1):
            ok, what = run_probe(probe, container, env, port)
            if ok:
                break
            if attempt < attempts:
                time.sleep(probe.get("periodSeconds", 10))
        assert ok, f"{container['name']} {kind} failed ({attempts} attempt(s)): {what}"
        seen[kind] = what
    return seen


@pytest.mark.parametrize("name", ["web", "worker", "scheduler", "mailer"])
def test_kubernetes_probes_pass_as_declared_against_the_configmaps_settings(formation, formation_env, name):
    [deployment] = [doc for doc in k8s_documents("Deployment") if doc["metadata"]["name"] == name]
    # The process type's own container (web's pod also runs the buffering proxy, tests/process/test_slow_clients.py).
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    declared = {entry["name"]: entry["value"] for entry in container.get("env", [])}
    # The pod's environment: the ConfigMap (ALLOWED_HOSTS=shop.example.com, …), the container's own
    # variables, and this test's services in place of the Secret. The container's port (PORT,
    # 8000) is a free port here, which the probes' port maps to.
    pod_env = {**formation_env, **configmap_env(), **declared}
    # The port the probes reach (PORT for web, METRICS_PORT for the others) is a free one here.
    listen = {"PORT": formation_env["PORT"]} if name == "web" else {"METRICS_PORT": str(free_port())}
    own = {key: value for key, value in declared.items() if key not in {"PORT", "METRICS_PORT"}}
    # No wait: the startup probe is what waits for the process, as in the cluster.
    formation.start(name, wait=False, **configmap_env(), **own, **listen)
    outcomes = run_probes_as_kubelet(container, pod_env, port=int(next(iter(listen.values()))))
    assert set(outcomes) == set(PROBES)


def test_compose_web_healthcheck_passes_with_the_real_domain_in_allowed_hosts(formation, formation_env):
    web = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["web"]
    kind, *command = web["healthcheck"]["test"]
    assert kind == "CMD"
    env = {**formation_env, "ALLOWED_HOSTS": configmap_env()["ALLOWED_HOSTS"]}
    formation.start("web", wait=False, **env)  # the healthcheck itself is what tells it is up
    wait_until(lambda: port_open(int(env["PORT"])), deadline=30, message="web to listen")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("web: 1 live")
