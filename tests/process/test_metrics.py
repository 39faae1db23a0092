"""Metrics scraped from the Procfile's own processes: web's /metrics adds up its gunicorn workers
(prometheus-client's multiprocess mode) and refuses a scraper without the token; worker, mailer and
scheduler serve theirs on METRICS_PORT; processing an order moves them all."""

import re
import signal
import socket
from pathlib import Path

import psutil
import pytest

from embedded.harness import procfile
from embedded.polling import wait_until
from embedded.servers import free_port
from embedded.shopper import Browser
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.metrics import sample, scrape

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

TOKEN = "process-metrics-token-0123456789"


def gunicorn_workers(web) -> list[psutil.Process]:
    """Return the gunicorn workers of web (its arbiter's children)."""
    return psutil.Process(web.pid).children()


def test_web_metrics_add_up_every_gunicorn_worker_and_are_refused_without_the_token(formation, tmp_path):
    directory = tmp_path / "multiproc"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by a previous run")
    web = formation.start("web", WEB_CONCURRENCY="2", METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(directory))
    wait_until(lambda: len(gunicorn_workers(web)) == 2, deadline=15, message="two gunicorn workers")
    base = f"http://127.0.0.1:{formation.env['PORT']}"
    url = f"{base}/metrics"

    status, headers, _ = scrape(url)
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="metrics"')
    assert scrape(url, token=TOKEN[:-1])[0] == 403
    status, _, before = scrape(url, token=TOKEN, Host="10.42.8.201:8000")  # as Prometheus, by pod IP
    assert status == 200
    assert not (directory / "counter_1.db").exists(), "files of a previous run are wiped at start"

    # One storefront request held half-sent by one worker, so that the other serves the second.
    with socket.create_connection(("127.0.0.1", int(formation.env["PORT"])), timeout=10) as held:
        held.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        port = held.getsockname()[1]

        def holder():
            return next(
                (
                    w
                    for w in gunicorn_workers(web)
                    if any(c.raddr and c.raddr.port == port for c in w.net_connections())
                ),
                None,
            )

        busy = wait_until(holder, deadline=10, message="a worker to take the held request")
        assert Browser(base).request("/")[0] == 200
        held.sendall(b"\r\n")
        assert held.recv(64).startswith(b"HTTP/1.1 200")

    _, _, after = scrape(url, token=TOKEN)
    name = "formation_http_requests_total"
    assert (
        sample(after, name, view="product-list", status="200") - sample(before, name, view="product-list", status="200")
        == 2
    )
    pids = {int(m.group(1)) for f in directory.iterdir() if (m := re.fullmatch(r"counter_(\d+)\.db", f.name))}
    assert pids == {w.pid for w in gunicorn_workers(web)} and busy.pid in pids


def multiprocess_directory(web) -> Path:
    """Return the multiprocess directory that web's arbiter says it made."""
    return Path(re.search(r"metrics: multiprocess directory ([^\s\"]+)", web.output()).group(1))


def test_web_without_a_multiprocess_directory_makes_one_and_removes_it_at_exit(formation):
    formation.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    url = f"http://127.0.0.1:{formation.env['PORT']}/metrics"
    killed = formation.start("web", METRICS_TOKEN=TOKEN)
    orphan = multiprocess_directory(killed)
    assert scrape(url, token=TOKEN)[0] == 200
    killed.kill()  # SIGKILL: no atexit
    assert any(orphan.iterdir())

    web = formation.start("web", METRICS_TOKEN=TOKEN)
    directory = multiprocess_directory(web)
    assert directory.is_dir() and directory != orphan
    assert not orphan.exists(), "the next web removes a killed arbiter's directory"
    assert scrape(url, token=TOKEN)[0] == 200
    assert any(directory.iterdir())
    web.send_signal(signal.SIGTERM)
    assert web.wait(deadline=30) == 0
    assert not directory.exists()


def test_web_whose_workers_fail_to_boot_keeps_gunicorns_error_status_and_cleans_up(formation):
    # The clean-stop shortcut (os._exit(0) in worker_exit and on_exit, gunicorn.conf.py) must
    # not turn a failure into exit 0: the Procfile's web line with an app that cannot be imported.
    formation.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = procfile()["web"].replace(" project.wsgi", " no_such_module.wsgi")
    web = formation.start("web", wait=False, command=command)
    assert web.wait(deadline=60) == 3  # gunicorn's WORKER_BOOT_ERROR
    assert "Reason: Worker failed to boot." in web.output()
    assert not multiprocess_directory(web).exists()


def test_metrics_off_without_a_token(formation):
    formation.env.pop("METRICS_TOKEN", None)
    formation.start("web")
    status, _, samples = scrape(f"http://127.0.0.1:{formation.env['PORT']}/metrics", token=TOKEN)
    assert (status, samples) == (404, {})


def test_an_order_processed_moves_the_metrics_of_worker_mailer_scheduler_and_web(formation, smtp):
    formation.env["RELEASE_VERSION"] = "v-metrics-7"
    ports = {kind: free_port() for kind in ("worker", "mailer", "scheduler")}
    web = formation.start("web", wait=False, METRICS_TOKEN=TOKEN)
    others = {
        kind: formation.start(kind, wait=False, METRICS_TOKEN=TOKEN, METRICS_PORT=str(port), METRICS_ADDR="127.0.0.1")
        for kind, port in ports.items()
    }
    for process in (web, *others.values()):
        process.wait_ready(30)
    for kind, port in ports.items():
        others[kind].wait_for_output(f"{kind}: metrics on http://127.0.0.1:{port}/metrics")
    urls = {kind: f"http://127.0.0.1:{port}/metrics" for kind, port in ports.items()}
    urls["web"] = f"http://127.0.0.1:{formation.env['PORT']}/metrics"

    # METRICS_PORT asks for the token too when it is set.
    assert scrape(urls["worker"])[0] == 401
    assert scrape(urls["mailer"], token="wrong-token-0123456789")[0] == 403
    before = {kind: scrape(url, token=TOKEN)[2] for kind, url in urls.items()}
    assert sample(before["web"], "formation_orders", status="paid") == 0
    for kind, samples in before.items():  # each names the release it runs, and its type
        assert sample(samples, "formation_release_info", release="v-metrics-7", process_type=kind) == 1, kind

    order = factories.order()

    def scraped(kind: str, name: str, **labels: str) -> float:
        return sample(scrape(urls[kind], token=TOKEN)[2], name, **labels)

    wait_until(
        lambda: scraped("worker", "formation_worker_jobs_finished_total", queue="default") >= 1,
        deadline=30,
        message="the worker's finished-jobs counter to count the order's job",
    )
    worker = scrape(urls["worker"], token=TOKEN)[2]
    # At least: the sweep may enqueue the order's job once more (a no-op) meanwhile.
    assert sample(worker, "formation_worker_jobs_started_total", queue="default") >= 1
    assert sample(worker, "formation_worker_jobs_failed_total", queue="default") == 0
    assert sample(worker, "formation_worker_job_duration_seconds_count", queue="default") >= 1
    assert sample(worker, "formation_queue_depth", queue="default") == 0
    assert ("formation_queue_depth", frozenset({("queue", "maintenance")})) in worker
    assert scraped("web", "formation_orders", status="paid") == 1
    assert scraped("web", "formation_orders", status="pending") == 0

    wait_until(
        lambda: scraped("mailer", "formation_mailer_sends_total", result="sent") == 1,
        deadline=30,
        message="the mailer's sent counter to count the confirmation",
    )
    mailer = scrape(urls["mailer"], token=TOKEN)[2]
    assert sample(mailer, "formation_mailer_send_duration_seconds_count", result="sent") == 1
    assert sample(mailer, "formation_mailer_sends_total", result="failed_transient") == 0
    assert sample(mailer, "formation_outbox_backlog", status="pending") == 0
    assert sample(mailer, "formation_outbox_backlog", status="failed") == 0
    assert str(order.pk) in smtp.messages[0].get_content()

    # The scheduler moves the periodic sweeps (every ORDER_SWEEP_INTERVAL = 1 s here) to their queue.
    wait_until(
        lambda: scraped("scheduler", "formation_scheduler_jobs_enqueued_total", queue="maintenance") >= 1,
        deadline=30,
        message="the scheduler's enqueued counter",
    )


def test_web_counts_its_busy_workers_across_gunicorn_workers_and_never_the_scrape(formation):
    """formation_web_workers, what web's autoscaler follows: every live gunicorn worker counts,
    added up over the workers (multiprocess "livesum"); one held in a request counts as busy, and
    the scrape itself never does."""
    web = formation.start("web", WEB_CONCURRENCY="2", METRICS_TOKEN=TOKEN)
    wait_until(lambda: len(gunicorn_workers(web)) == 2, deadline=15, message="two gunicorn workers")
    url = f"http://127.0.0.1:{formation.env['PORT']}/metrics"

    def workers() -> tuple[float, float]:
        _, _, samples = scrape(url, token=TOKEN)
        return tuple(sample(samples, "formation_web_workers", state=state) for state in ("busy", "idle"))

    # Both workers count once each has started (post_worker_init), whichever answers the scrape.
    wait_until(lambda: workers() == (0, 2), deadline=15, message="two idle workers")
    # A request whose body has not all arrived: its worker is in the view (the CSRF check reads the
    # form) until it has, busy all that time.
    with socket.create_connection(("127.0.0.1", int(formation.env["PORT"])), timeout=10) as held:
        held.sendall(
            b"POST /cart/add/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: csrftoken=" + b"a" * 32 + b"\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\nsku=held"
        )
        wait_until(lambda: workers() == (1, 1), deadline=10, message="one busy worker")
        held.sendall(b"&" * 32)
        assert held.recv(64).startswith(b"HTTP/1.1 ")
    wait_until(lambda: workers() == (0, 2), deadline=10, message="both idle again")
