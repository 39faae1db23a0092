"""Slow clients cannot starve web: gunicorn's sync workers behind the buffering proxy.

web is started from the Procfile's own line, with two workers as WEB_CONCURRENCY gives production
and a worker timeout of 5 s, so a worker held by one client for longer would be killed (WORKER
TIMEOUT) within each test. In front of it runs nginx with deploy/nginx/web.conf.template, the file
docker compose and the Kubernetes web pod give nginx (embedded.proxy). The clients are raw sockets:
a slowloris sends one header byte every 2 s, an idle socket (a browser's preconnect) sends nothing,
a slow upload sends its body in small pieces.
"""

import contextlib
import http.client
import http.server
import json
import signal
import socket
import threading
import time

import psutil
import pytest

from embedded.polling import wait_until
from embedded.proxy import WebProxy
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

WORKER_TIMEOUT = "5"  # seconds (WEB_TIMEOUT): shorter than the time the slow clients below last
STATEMENT_TIMEOUT = "3"  # seconds: web refuses to start with one not below WEB_TIMEOUT
ANSWER_WITHIN = 1.0  # seconds each probe of /health or a page may take
SLOW_FOR = 12.0  # seconds the slow clients keep at it while web is probed


@pytest.fixture
def proxied_web(formation, tmp_path):
    """Start web (two workers, WEB_TIMEOUT 5 s) and nginx in front of it; return ``(web, proxy)``."""
    web = formation.start(
        "web", WEB_CONCURRENCY="2", WEB_TIMEOUT=WORKER_TIMEOUT, DATABASE_STATEMENT_TIMEOUT=STATEMENT_TIMEOUT
    )
    proxy = WebProxy(tmp_path / "nginx", int(web.env["PORT"]))
    yield web, proxy
    proxy.close()


class SlowClients:
    """Slowloris connections (one header byte every 2 s, reconnecting when dropped) and idle
    sockets against 127.0.0.1:``port``, kept up by threads until ``close()``."""

    def __init__(self, port: int, *, slowloris: int, idle: int):
        self.port = port
        self.stop = threading.Event()
        self.idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(idle)]
        first = [self._open() for _ in range(slowloris)]
        self.threads = [threading.Thread(target=self._drip, args=(sock,), daemon=True) for sock in first]
        for thread in self.threads:
            thread.start()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        return sock

    def _drip(self, sock: socket.socket) -> None:
        while not self.stop.wait(2):
            try:
                sock.sendall(b"X")
            except OSError:  # dropped (nginx's client_header_timeout): come back, as an attacker does
                sock.close()
                with contextlib.suppress(OSError):
                    sock = self._open()
        sock.close()

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for sock in self.idle:
            sock.close()


def timed_get(port: int, path: str) -> tuple[int | None, float]:
    """GET ``path`` on 127.0.0.1:``port``; return (status, or None when no answer within
    ANSWER_WITHIN seconds; seconds taken)."""
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        status = conn.getresponse().status
    except OSError:  # TimeoutError, refused, reset
        status = None
    finally:
        conn.close()
    return status, time.monotonic() - began


def refused(port: int) -> bool:
    """Return True when a new connection to 127.0.0.1:``port`` is refused (or reset: a connect the
    kernel queued as the listener was being closed)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def gunicorn_workers(web) -> set[int]:
    return {child.pid for child in psutil.Process(web.pid).children()}


def test_slow_and_idle_clients_do_not_starve_web_behind_the_proxy(proxied_web):
    """4 slowloris connections and 2 idle sockets against the proxy: /health and the catalogue page
    keep answering within 1 s each, and no gunicorn worker is killed."""
    web, proxy = proxied_web
    workers = gunicorn_workers(web)
    clients = SlowClients(proxy.port, slowloris=4, idle=2)
    failures, probes = [], 0
    try:
        end = time.monotonic() + SLOW_FOR
        while time.monotonic() < end:
            for path in ("/health", "/"):
                status, took = timed_get(proxy.port, path)
                probes += 1
                if status != 200 or took > ANSWER_WITHIN:
                    failures.append((path, status, round(took, 2)))
            clients.stop.wait(0.5)
    finally:
        clients.close()
    assert not failures, f"{len(failures)} of {probes} probes failed: {failures[:5]}"
    assert "WORKER TIMEOUT" not in web.output()
    assert gunicorn_workers(web) == workers, "a gunicorn worker was replaced"


def test_sync_workers_alone_are_held_by_slow_clients(formation):
    """Why the proxy: without it, one slow client per worker is enough to leave /health
    unanswered (gunicorn's sync worker reads a request's headers itself, https://docs.gunicorn.org/en/stable/deploy.html)."""
    web = formation.start("web", WEB_CONCURRENCY="2")
    port = int(web.env["PORT"])
    clients = SlowClients(port, slowloris=2, idle=0)
    try:

        def both_workers_hold_one():
            workers = psutil.Process(web.pid).children()
            return sum(any(c.status == "ESTABLISHED" for c in w.net_connections()) for w in workers) == 2

        wait_until(both_workers_hold_one, deadline=10, message="each gunicorn worker to take a slow client")
        status, took = timed_get(port, "/health")
        assert status is None, f"/health answered {status} in {took:.2f}s"
    finally:
        clients.close()


def test_a_slow_upload_is_buffered_by_the_proxy(proxied_web):
    """Two POST bodies sent slowly (50 bytes every 0.5 s, 6 s each) through the proxy hold no worker:
    /health answers meanwhile, and each upload, once whole, gets web's own answer."""
    web, proxy = proxied_web
    workers = gunicorn_workers(web)
    # Django's CSRF check reads the form for its token before the view runs, so web reads the
    # whole body (an unmasked 32-character secret equal to the cookie's passes the check).
    token = b"S" * 32
    body = b"csrfmiddlewaretoken=" + token + b"&note=" + b"x" * 574
    uploads = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(
            b"POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Cookie: csrftoken=" + token + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        uploads.append(sock)
    failures = []
    for offset in range(0, len(body), 50):
        for sock in uploads:
            sock.sendall(body[offset : offset + 50])
        status, took = timed_get(proxy.port, "/health")
        if status != 200:
            failures.append((offset, status, round(took, 2)))
        time.sleep(max(0.0, 0.5 - took))  # the upload's own pace, not a wait for a condition
    answers = []
    for sock in uploads:
        with sock:
            answers.append(b"".join(iter(lambda s=sock: s.recv(65536), b"")))
    assert not failures, failures
    for answer in answers:
        # web's own answer (not nginx's 408, 413 or 502) once it read the form and passed the CSRF
        # check: /health takes GET and HEAD only. With the request id its middleware sets.
        assert answer.startswith(b"HTTP/1.1 405"), answer[:200]
        assert b"x-request-id:" in answer.lower()
    assert "WORKER TIMEOUT" not in web.output()
    assert gunicorn_workers(web) == workers


def test_sigterm_drains_requests_in_flight_through_the_proxy(formation, tmp_path):
    """A pod's deletion stops both at once: web gets SIGTERM, nginx SIGQUIT (its graceful stop).
    The request web's one worker is reading and the one nginx has already handed to web (waiting in
    gunicorn's listen backlog) are both answered 200, the latter through nginx; both exit 0."""
    web = formation.start("web", WEB_CONCURRENCY="1")
    port = int(web.env["PORT"])
    proxy = WebProxy(tmp_path / "nginx", port)
    try:
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        busy.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")  # the worker is reading it

        def worker_reads_busy():
            [worker] = psutil.Process(web.pid).children()
            return any(c.laddr.port == port and c.status == "ESTABLISHED" for c in worker.net_connections())

        wait_until(worker_reads_busy, deadline=10, message="gunicorn's worker to accept the connection")
        through = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
        through.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")

        def nginx_connected_to_web():
            nginx_workers = psutil.Process(proxy.popen.pid).children()
            return any(c.raddr and c.raddr.port == port for w in nginx_workers for c in w.net_connections())

        wait_until(nginx_connected_to_web, deadline=10, message="nginx to hand the request to web")
        web.send_signal(signal.SIGTERM)
        proxy.popen.send_signal(signal.SIGQUIT)
        # Both stop accepting (a SIGTERM'd nginx would be gone by now, with the request it held).
        wait_until(lambda: refused(proxy.port) and refused(port), deadline=10, message="new connections refused")
        busy.sendall(b"Connection: close\r\n\r\n")
        assert busy.recv(4096).startswith(b"HTTP/1.1 200 OK")
        busy.close()
        answer = b"".join(iter(lambda: through.recv(65536), b""))
        through.close()
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:300]
        assert web.wait(deadline=30) == 0
        assert proxy.popen.wait(timeout=30) == 0, proxy.errors()
    finally:
        proxy.close()


@pytest.fixture
def echo_upstream():
    """An HTTP server on 127.0.0.1 that answers each GET with the request's headers as JSON; its port."""

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({name.lower(): value for name, value in self.headers.items()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def forwarded(port: int, headers: dict[str, str]) -> dict[str, str]:
    """GET / through the proxy on ``port`` with ``headers``; return the headers the upstream received."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers=headers)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


SPOOFED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Ssl": "on",
    "Forwarded": "for=x",
}


@pytest.mark.parametrize(
    ("trusted", "client", "scheme"),
    [("192.0.2.0/24", "127.0.0.1", "http"), ("127.0.0.1/32", "203.0.113.7", "https")],
    ids=["client-is-not-the-trusted-balancer", "trusted-balancer"],
)
def test_the_proxy_forwards_the_clients_address_and_scheme_only_from_a_trusted_balancer(
    echo_upstream, tmp_path, trusted, client, scheme
):
    """The last X-Forwarded-For entry (what the app reads behind BEHIND_TLS_PROXY) is the client's:
    the peer's own address, or the one a trusted load balancer in front says. X-Forwarded-Proto is
    the balancer's, else the connection's; the other scheme headers gunicorn trusts never pass."""
    proxy = WebProxy(tmp_path / "nginx", echo_upstream, trusted_proxy_cidr=trusted)
    try:
        seen = forwarded(proxy.port, SPOOFED)
    finally:
        proxy.close()
    assert seen["x-forwarded-for"].split(",")[-1].strip() == client
    assert seen["x-forwarded-proto"] == scheme
    assert "x-forwarded-ssl" not in seen and "forwarded" not in seen and "x-forwarded-protocol" not in seen
