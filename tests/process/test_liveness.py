"""A busy process is alive, a stuck one is not: the mailer beats while it makes progress, however
long its pass, and stops beating when its loop stops (``manage.py probe mailer``). The probes that
Kubernetes runs (deploy/kubernetes, HTTP on each process's METRICS_PORT) stay alive through an
outage of Redis or PostgreSQL, whose readiness they report instead, and fail at once for a process
that is stopped."""

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from embedded.harness import ROOT, Process
from embedded.polling import wait_until
from embedded.servers import free_port
from mailer.models import OutboxMessage, OutboxStatus
from tests import factories
from tests.process.test_probes import k8s_documents, run_probe
from tests.support.databases import ALL_DATABASES
from tests.support.proxy import TcpProxy
from tests.support.smtp import start_smtp

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

SECONDS_PER_MESSAGE = 1.0  # under the tests' EMAIL_TIMEOUT (2 s), as a slow provider answers
MAX_AGE = 4.0  # seconds; the drain below takes three times as long


@pytest.fixture
def slow_smtp():
    """A real SMTP server that takes SECONDS_PER_MESSAGE to accept each message's data."""
    recorder, controller = start_smtp()
    record = recorder.handle_DATA

    async def slow_data(server, session, envelope):
        await asyncio.sleep(SECONDS_PER_MESSAGE)
        return await record(server, session, envelope)

    recorder.handle_DATA = slow_data
    yield recorder
    controller.stop()


def alive(max_age: float = MAX_AGE) -> bool:
    """Run ``probe mailer --max-age`` (in process, the same command); return whether it exits 0."""
    try:
        call_command("probe", "mailer", "--max-age", str(max_age), stdout=io.StringIO())
        return True
    except CommandError:
        return False


def test_a_mailer_draining_a_long_backlog_stays_alive(formation, slow_smtp):
    count = 12  # 12 s of sending in one pass, three times MAX_AGE
    for i in range(count):
        factories.outbox_message(to=f"user{i}@example.com")
    formation.start("mailer", EMAIL_URL=slow_smtp.url, MAILER_HEARTBEAT_SECONDS="1")
    wait_until(lambda: slow_smtp.messages, deadline=15, message="the first message to arrive")
    started = time.monotonic()
    samples: list[tuple[float, bool]] = []
    command_probe_done = False
    while OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() < count:
        elapsed = time.monotonic() - started
        assert elapsed < count * SECONDS_PER_MESSAGE + 30, "the drain did not finish"
        samples.append((round(elapsed, 1), alive()))
        if elapsed > MAX_AGE + 1 and not command_probe_done:
            # Once as the orchestrator runs it: the command line, its own process.
            result = subprocess.run(
                [sys.executable, "manage.py", "probe", "mailer", "--max-age", str(MAX_AGE)],
                cwd=ROOT,
                env=formation.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            samples.append((round(time.monotonic() - started, 1), result.returncode == 0))
            command_probe_done = True
        time.sleep(0.5)
    assert command_probe_done and samples[-1][0] > 2 * MAX_AGE, samples  # the window was sampled
    dead = [at for at, ok in samples if not ok]
    assert not dead, f"probe said 'no live process' at t={dead} s while the mailer was sending"


def test_a_stopped_mailer_is_reported_dead_after_max_age(formation):
    mailer = formation.start("mailer")
    wait_until(alive, deadline=15, message="the mailer's first heartbeat")
    mailer.send_signal(signal.SIGSTOP)  # stuck: the process exists but its loop makes no progress
    stopped = time.monotonic()
    try:
        wait_until(lambda: not alive(), deadline=MAX_AGE + 10, interval=0.2, message="the probe to fail")
        assert time.monotonic() - stopped >= MAX_AGE - 1.5  # not before the age limit (1 s heartbeat)
    finally:
        mailer.send_signal(signal.SIGCONT)
    wait_until(alive, deadline=15, message="the heartbeat after SIGCONT")


# --- The deployed probes (deploy/kubernetes) of worker, scheduler and mailer, run as declared -------

NON_WEB = ("worker", "scheduler", "mailer")
USE_POSTGRESQL = ("worker", "mailer")  # the scheduler uses Redis only


def deployed(name: str) -> tuple[dict, dict[str, str]]:
    """Return the Deployment ``name``'s container and its declared environment (METRICS_PORT …)."""
    [deployment] = [doc for doc in k8s_documents("Deployment") if doc["metadata"]["name"] == name]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container, {entry["name"]: entry["value"] for entry in container.get("env", [])}


def start_as_deployed(formation, name: str, **env: str) -> Process:
    """Start a process of type ``name`` with a METRICS_PORT of its own: a free port, where the
    deployed probes' port (9100) maps to."""
    return formation.start(name, METRICS_PORT=str(free_port()), **env)


def kubelet_probe(name: str, kind: str, process: Process) -> tuple[bool, str]:
    """Run Deployment ``name``'s ``kind`` probe exactly as declared (tests/process/test_probes.py)
    against ``process``, in the pod's environment (the process's, and the container's own
    variables); return (success, what it saw)."""
    container, declared = deployed(name)
    return run_probe(container[kind], container, {**process.env, **declared}, int(process.env["METRICS_PORT"]))


def wait_for_probe(name: str, kind: str, process: Process, deadline: float = 30) -> None:
    """Wait until Deployment ``name``'s ``kind`` probe passes against ``process``."""
    wait_until(lambda: kubelet_probe(name, kind, process)[0], deadline=deadline, message=f"{name} {kind} to pass")


def heartbeat_age(process: Process) -> float:
    """Return the age of ``process``'s heartbeat in seconds, as its ``/health`` says."""
    url = f"http://127.0.0.1:{process.env['METRICS_PORT']}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["heartbeat_age_seconds"]


def restart_window(name: str) -> float:
    """Seconds of failing liveness after which the kubelet restarts the container:
    failureThreshold × periodSeconds of the declared liveness probe."""
    probe = deployed(name)[0]["livenessProbe"]
    return probe.get("failureThreshold", 3) * probe.get("periodSeconds", 10)


def failed_liveness_through(window: float, processes: dict[str, Process]) -> dict[str, list]:
    """Run each process's liveness probe every 2 s for ``window`` seconds; return, per process
    type, the (elapsed seconds, what it saw) of each probe that failed."""
    failed: dict[str, list] = {name: [] for name in processes}
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < window:
        for name, process in processes.items():
            ok, what = kubelet_probe(name, "livenessProbe", process)
            if not ok:
                failed[name].append((round(elapsed, 1), what))
        time.sleep(2)
    return failed


def test_a_redis_outage_restarts_no_worker_scheduler_or_mailer(formation, own_redis):
    processes = {name: start_as_deployed(formation, name) for name in NON_WEB}
    for name, process in processes.items():
        wait_for_probe(name, "livenessProbe", process)
    own_redis.stop()
    try:
        # As long as the kubelet takes to restart a container whose liveness keeps failing, and more.
        window = max(map(restart_window, NON_WEB)) + 4
        failed = failed_liveness_through(window, processes)
        assert not any(failed.values()), f"liveness failed while Redis was down: {failed}"
        assert all(process.alive() for process in processes.values())
        # Alive because each loop went on beating while it retried Redis, not only for a long limit.
        ages = {name: heartbeat_age(process) for name, process in processes.items()}
        assert all(age < window - 4 for age in ages.values()), ages
        # Readiness is what says the services are away: of the types that need Redis.
        for name in ("worker", "scheduler"):
            ok, what = kubelet_probe(name, "readinessProbe", processes[name])
            assert not ok and '"redis": "' in what and '"redis": "ok"' not in what, what
        assert kubelet_probe("mailer", "readinessProbe", processes["mailer"])[0]  # PostgreSQL only
    finally:
        own_redis.start()
    for name, process in processes.items():
        wait_for_probe(name, "readinessProbe", process, deadline=90)


def test_a_postgresql_outage_restarts_no_mailer_or_worker(formation):
    database = connection.settings_dict
    proxy = TcpProxy((database["HOST"] or "127.0.0.1", int(database["PORT"]))).start()
    url = urlsplit(formation.env["DATABASE_URL"])
    through_proxy = urlunsplit(url._replace(netloc=f"{url.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"))
    try:
        processes = {
            name: start_as_deployed(formation, name, DATABASE_URL=through_proxy) for name in ("mailer", "worker")
        }
        for name, process in processes.items():
            wait_for_probe(name, "readinessProbe", process)
        proxy.cut()  # every connection reset, new ones refused: PostgreSQL is gone for them
        failed = failed_liveness_through(max(map(restart_window, processes)) + 4, processes)
        assert not any(failed.values()), f"liveness failed while PostgreSQL was away: {failed}"
        assert all(process.alive() for process in processes.values())
        for name, process in processes.items():
            ok, what = kubelet_probe(name, "readinessProbe", process)
            assert not ok and '"database": "' in what and '"database": "ok"' not in what, what
        proxy.restore()
        for name, process in processes.items():
            wait_for_probe(name, "readinessProbe", process, deadline=60)
    finally:
        proxy.cut()


def test_a_stopped_process_fails_its_liveness_probe_at_once(formation):
    for name in NON_WEB:
        process = start_as_deployed(formation, name)
        wait_for_probe(name, "livenessProbe", process)
        liveness = deployed(name)[0]["livenessProbe"]
        process.send_signal(signal.SIGSTOP)  # hung as a whole: the port accepts, nothing answers
        try:
            started = time.monotonic()
            ok, what = kubelet_probe(name, "livenessProbe", process)
            took = time.monotonic() - started
            assert not ok, f"{name}: {what}"
            # Failed within the probe's own timeout: within one period, so the kubelet restarts a
            # stopped container after failureThreshold periods.
            assert took < liveness["timeoutSeconds"] + 1 < liveness["periodSeconds"], (name, took)
        finally:
            process.send_signal(signal.SIGCONT)
        wait_for_probe(name, "livenessProbe", process)
