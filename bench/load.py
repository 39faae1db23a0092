"""HTTP load for bench/run.py, always from another process than the server, on 127.0.0.1.

GET load is Debian's ``wrk`` (``wrk -t2 -c16 -d<seconds>s --latency``). POST load (the checkout,
the floor's INSERT) is ``post_many``: threads, one keep-alive connection each, firing prepared
requests; the same generator drives the floor and the shop so their ratio is fair.
"""

import http.client
import re
import shutil
import statistics
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser

WRK = shutil.which("wrk")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class Load:
    """One load run: ``rps`` (requests/s), ``p50``/``p99`` (ms), ``requests`` sent and ``errors``
    (socket errors, timeouts, and answers other than the expected status class)."""

    rps: float
    p50: float
    p99: float
    requests: int
    errors: int
    statuses: dict = field(default_factory=dict)


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def wrk(url: str, *, seconds: float, connections: int = 16, threads: int = 2, headers=()) -> Load:
    """Run wrk against ``url`` for ``seconds``; return its req/s, p50, p99 and errors.

    Raise RuntimeError with wrk's output when it cannot be parsed (wrk missing: check WRK first).
    """
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
        requests = int(re.search(r"(\d+) requests in", out).group(1))
    except AttributeError:
        raise RuntimeError(f"could not read wrk's output for {url}:\n{out}") from None
    errors = 0
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(n) for n in match.groups())
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    return Load(rps, p50, p99, requests, errors)


@dataclass
class Request:
    """A prepared HTTP request: ``method``, ``path``, ``body`` (bytes) and ``headers``."""

    method: str
    path: str
    body: bytes = b""
    headers: dict = field(default_factory=dict)


def post_many(port: int, requests: list[Request], *, connections: int = 16, ok=(200, 201, 303)) -> Load:
    """Send ``requests`` to 127.0.0.1:``port`` over ``connections`` keep-alive connections at once,
    each as soon as the previous answer on its connection arrived; return the Load (``rps`` over
    the wall time from the first send to the last answer; a status not in ``ok`` is an error)."""
    lock = threading.Lock()
    todo = list(reversed(requests))
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if not todo:
                    break
                request = todo.pop()
            began = time.perf_counter()
            try:
                conn.request(request.method, request.path, body=request.body, headers=request.headers)
                response = conn.getresponse()
                response.read()
                status: int | str = response.status
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
            elapsed = (time.perf_counter() - began) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=run) for _ in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    errors = sum(count for status, count in statuses.items() if status not in ok)
    return Load(len(latencies) / wall, quantiles[49], quantiles[98], len(latencies), errors, statuses)


def status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """Return the status of ``GET path`` on 127.0.0.1:``port``, or None when it cannot connect."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class _Inputs(HTMLParser):
    """Collect the ``name``/``value`` of every <input> and the first <option> of each <select>."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name"):
            self.fields.setdefault(attrs["name"], attrs.get("value") or "")
        elif tag == "select":
            self._select = attrs.get("name")
        elif tag == "option" and self._select and attrs.get("value"):
            self.fields.setdefault(self._select, attrs["value"])

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None


class Browser:
    """A shopper's cookie jar over one keep-alive connection to 127.0.0.1:``port``."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def request(self, method: str, path: str, fields: dict | None = None) -> tuple[int, str]:
        """Send one request (``fields`` form-encoded for a POST); return (status, body text)."""
        headers = {"Cookie": self.cookie_header()} if self.cookies else {}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode(errors="replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, text

    def add_to_cart(self, sku: str) -> None:
        """GET / (for the CSRF cookie), then POST /cart/add/ with ``sku``; RuntimeError unless 303."""
        if "csrftoken" not in self.cookies:
            self.request("GET", "/")
        status, text = self.request(
            "POST", "/cart/add/", {"product": sku, "quantity": "1", "csrfmiddlewaretoken": self.cookies["csrftoken"]}
        )
        if status != 303:
            raise RuntimeError(f"cart add answered {status}: {text[:300]}")

    def checkout_request(self, email: str) -> Request:
        """GET /checkout/ and return the POST that places its order (the form's own fields);
        its ``X-Bench-Email`` header (ignored by the shop) names the order's email."""
        status, text = self.request("GET", "/checkout/")
        if status != 200:
            raise RuntimeError(f"checkout page answered {status}")
        parser = _Inputs()
        parser.feed(text)
        fields = {**parser.fields, "email": email}
        headers = {
            "Cookie": self.cookie_header(),
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Bench-Email": email,
        }
        self.conn.close()
        return Request("POST", "/checkout/", urllib.parse.urlencode(fields).encode(), headers)


def prepare_checkouts(port: int, sku: str, count: int, *, email: str, connections: int = 16) -> list[Request]:
    """Make ``count`` shoppers, each with ``sku`` in a new cart, and return their checkout POSTs;
    shopper n's email is ``email.format(n=n)``."""
    out: list[Request] = []
    lock = threading.Lock()
    numbers = iter(range(count))

    def run() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            browser = Browser(port)
            browser.add_to_cart(sku)
            request = browser.checkout_request(email.format(n=n))
            with lock:
                out.append(request)

    threads = [threading.Thread(target=run) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(out) != count:
        raise RuntimeError(f"prepared {len(out)} of {count} checkouts (see the errors above)")
    return out
