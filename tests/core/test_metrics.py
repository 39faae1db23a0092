"""Metrics (core/metrics.py) in one process: web's /metrics is never public, requests are counted
by view and status, orders by status come from PostgreSQL, METRICS_PORT serves the other types.
The Procfile's own processes are scraped in tests/process/test_metrics.py."""

import logging
import runpy
import types

import django_rq
import psycopg
import pytest
from prometheus_client import REGISTRY, generate_latest

from core.metrics import QueueDepthCollector, metrics_serve, web_worker_busy
from core.queues import DEFAULT_QUEUE
from embedded.harness import ROOT
from embedded.servers import free_port
from orders.models import Order, OrderStatus
from tests import factories
from tests.support.configuration import assert_check_fails_with_one_line_naming
from tests.support.metrics import metric_samples, sample, scrape
from tests.support.queues import run_burst_worker

TOKEN = "test-metrics-token-0123456789"


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def samples_of(response) -> dict:
    assert response.status_code == 200, response.content
    return metric_samples(response.content.decode())


def test_metrics_are_off_while_no_token_is_set(client, settings):
    settings.METRICS_TOKEN = None
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything-at-all-here")
    assert response.status_code == 404
    assert b"formation_" not in response.content


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN])
def test_metrics_without_bearer_credentials_answer_401_with_the_challenge(client, token, header):
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"formation_" not in response.content


@pytest.mark.parametrize("wrong", [TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "é" + TOKEN])
def test_metrics_with_a_wrong_token_answer_403(client, token, wrong):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {wrong}")
    assert response.status_code == 403
    assert b"formation_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["10.42.8.201:8000", "[fd00:10:42::8]:8000", "shop.example.com"])
def test_metrics_with_the_token_answer_whatever_the_host_header(client, settings, token, host):
    settings.ALLOWED_HOSTS = ["shop.example.com"]
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {token}", HTTP_HOST=host)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"


@pytest.mark.django_db
def test_requests_are_counted_by_view_name_and_status_never_by_path(client, token, product):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    before = samples_of(client.get("/metrics", **auth))
    client.get("/")
    client.get("/products/procfile-mug/")
    client.get("/products/no-such-mug/")
    client.get("/no/such/page/")
    after = samples_of(client.get("/metrics", **auth))

    def moved(view, status):
        name = "formation_http_requests_total"
        return sample(after, name, view=view, status=status) - sample(before, name, view=view, status=status)

    assert moved("product-list", "200") == 1
    assert moved("product-detail", "200") == 1
    assert moved("product-detail", "404") == 1
    assert moved("unresolved", "404") == 1
    # The scrape before this one was counted too, under the probes' name.
    assert moved("metrics", "200") == 1
    count = "formation_http_request_duration_seconds_count"
    assert sample(after, count, view="product-list") - sample(before, count, view="product-list") == 1
    assert not any("no-such" in value for _, labels in after for _, value in labels)


@pytest.mark.django_db
def test_orders_are_counted_by_status_at_each_scrape(client, token, product):
    for _ in range(2):
        factories.order()
    Order.objects.filter(pk=factories.order().pk).update(status=OrderStatus.PAID)
    samples = samples_of(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert sample(samples, "formation_orders", status="pending") == 2
    assert sample(samples, "formation_orders", status="paid") == 1
    assert sample(samples, "formation_orders", status="failed") == 0


def release_info(samples: dict) -> dict:
    """Return the formation_release_info samples of ``samples``: {sorted label pairs: value}."""
    return {
        tuple(sorted(labels)): value for (name, labels), value in samples.items() if name == "formation_release_info"
    }


@pytest.mark.django_db
def test_web_metrics_name_the_release_this_process_runs(client, token, settings):
    settings.RELEASE, settings.PROCESS_TYPE = "v42", "web"
    samples = samples_of(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert release_info(samples) == {(("process_type", "web"), ("release", "v42")): 1}


@pytest.mark.parametrize("with_token", [False, True])
def test_metrics_port_serves_this_process_and_asks_for_the_token_when_set(settings, with_token):
    settings.METRICS_PORT, settings.METRICS_ADDR = free_port(), "127.0.0.1"
    settings.METRICS_TOKEN = TOKEN if with_token else None
    settings.RELEASE, settings.PROCESS_TYPE = "v42", "test"
    server = metrics_serve(process_type="test")
    try:
        url = f"http://127.0.0.1:{settings.METRICS_PORT}/metrics"
        status, _, samples = scrape(url, token=TOKEN if with_token else None)
        assert status == 200
        assert ("process_cpu_seconds_total", frozenset()) in samples
        assert release_info(samples) == {(("process_type", "test"), ("release", "v42")): 1}
        if with_token:
            status, headers, _ = scrape(url)
            assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
            assert scrape(url, token="wrong-token-0123456789")[0] == 403
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_port_in_use_is_logged_and_the_process_goes_on(settings, caplog):
    settings.METRICS_PORT, settings.METRICS_ADDR = free_port(), "127.0.0.1"
    first = metrics_serve(process_type="test")
    try:
        assert metrics_serve(process_type="second") is None
        assert f"second: metrics not served, cannot listen on 127.0.0.1:{settings.METRICS_PORT}" in caplog.text
    finally:
        first.shutdown()
        first.server_close()


def test_metrics_port_unset_serves_nothing(settings):
    settings.METRICS_PORT = None
    assert metrics_serve(process_type="test") is None


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
        ({"METRICS_TOKEN": "has a space in it, 0123456789"}, "METRICS_TOKEN"),
        ({"METRICS_TOKEN": "non-ascii-tokén-0123456789"}, "METRICS_TOKEN"),
        ({"METRICS_PORT": "0"}, "METRICS_PORT"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"METRICS_PORT": "metrics"}, "METRICS_PORT"),
    ],
)
def test_bad_metrics_settings_exit_with_one_line_naming_the_variable(changes, variable):
    assert_check_fails_with_one_line_naming(variable, **changes)


@pytest.mark.django_db(transaction=True)
def test_the_worker_counts_jobs_finished_and_failed_and_the_queue_depth():
    # Recorded by the worker process itself around each forked work horse, so a burst worker in
    # this process records into this process's registry.
    def value(name, queue="default"):
        return REGISTRY.get_sample_value(name, {"queue": queue}) or 0.0

    names = ("started", "finished", "failed")
    before = {name: value(f"formation_worker_jobs_{name}_total") for name in names}
    queue = django_rq.get_queue(DEFAULT_QUEUE)
    queue.enqueue("builtins.len", "abc")
    queue.enqueue("builtins.int", "not a number")  # raises ValueError: the job fails
    [depth] = QueueDepthCollector().collect()
    assert {s.labels["queue"]: s.value for s in depth.samples}[DEFAULT_QUEUE] == 2

    run_burst_worker()

    moved = {name: value(f"formation_worker_jobs_{name}_total") - before[name] for name in names}
    assert moved == {"started": 2, "finished": 1, "failed": 1}
    assert value("formation_worker_job_duration_seconds_count") >= 2
    [depth] = QueueDepthCollector().collect()
    assert {s.labels["queue"]: s.value for s in depth.samples}[DEFAULT_QUEUE] == 0


@pytest.mark.django_db
def test_database_connections_are_counted_by_the_process_type_their_application_name_names(client, token):
    from embedded.harness import formation_database_url

    url = formation_database_url()
    opened = [
        psycopg.connect(url, application_name="formation/worker.2/v1/99@host"),
        psycopg.connect(url, application_name="formation/worker/v1/98@host"),
        psycopg.connect(url, application_name="nightly-report"),
    ]
    try:
        samples = samples_of(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}"))
    finally:
        for session in opened:
            session.close()
    connections = {
        dict(labels)["process_type"]: value
        for (name, labels), value in samples.items()
        if name == "formation_database_connections" and dict(labels)["state"] == "idle"
    }
    assert connections["worker"] == 2
    assert connections["other"] >= 1


def test_a_web_worker_counts_as_busy_while_it_handles_a_request_and_never_for_probes(monkeypatch):
    """gunicorn.conf.py's hooks, as gunicorn calls them in a worker: busy from pre_request to
    post_request, idle otherwise; a probe or a scrape leaves it idle (a scrape would always find
    its own worker busy)."""
    monkeypatch.setenv("PROCESS_TYPE", "web")  # the config file's setdefault, undone after the test
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    worker = types.SimpleNamespace(log=logging.getLogger("gunicorn.error"))

    def state() -> tuple[float, float]:
        samples = metric_samples(generate_latest(REGISTRY).decode())
        return tuple(sample(samples, "formation_web_workers", state=state) for state in ("busy", "idle"))

    web_worker_busy(False)  # as post_worker_init does
    assert state() == (0, 1)
    for path, busy in (("/cart/add/", 1), ("/metrics", 0), ("/health", 0), ("/ready", 0), ("/", 1)):
        request = types.SimpleNamespace(method="GET", path=path)
        hooks["pre_request"](worker, request)
        assert state() == (busy, 1 - busy), path
        hooks["post_request"](worker, request, {}, None)
        assert state() == (0, 1), path
