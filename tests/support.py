"""Test helpers: an SMTP server that records what it receives, checkout form data, polling, a burst worker."""

import http.cookiejar
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from html.parser import HTMLParser

import django_rq
from aiosmtpd.controller import Controller
from django.core.management import call_command

from core.queues import DEFAULT_QUEUE
from embedded.servers import free_port

# The database aliases: the shop's and the sandbox gateway's own connection (project.settings).
ALL_DATABASES = ["default", "gateway"]


def wait_until(predicate, *, deadline: float, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate()`` every ``interval`` seconds; return its first truthy value.

    Raise AssertionError naming ``message`` when ``deadline`` seconds pass first.
    """
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {message}")
        time.sleep(interval)


def run_burst_worker() -> None:
    """Run a real RQ worker (it forks a work horse per job) until the queue is empty."""
    call_command("rqworker", DEFAULT_QUEUE, "--burst", verbosity=0)


def queued_job_ids() -> list[str]:
    """Return the ids of the jobs waiting in the default queue."""
    return django_rq.get_queue(DEFAULT_QUEUE).get_job_ids()


@dataclass
class RecordingSMTP:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=default_policy))
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(message["Message-ID"]) for message in self.messages]


# Addresses Django's SMTP backend cannot encode or no server can deliver (mailer.validators):
# the checkout refuses each, and the mailer fails a legacy row holding one at once.
# 18 characters, 61 octets once encoded (a label may have 63).
LONG_CJK_LABEL = "数据库服务器测试邮件地址域名标签长度"
UNDELIVERABLE = {
    "left-to-right mark in the domain": "shopper@exa\u200emple.com",
    "noncharacter U+FFFF in the domain": "shopper@exa\uffffmple.com",
    "label of 60 x ü (64 octets once encoded)": "shopper@" + "ü" * 60 + ".example",
    "zero-width space (IDNA would drop it)": "shopper@exa\u200bmple.com",
    "right-to-left override": "shopper@exa\u202emple.com",
    "soft hyphen": "shopper@ex\u00adample.com",
    "non-ASCII local part (no SMTPUTF8)": "zoë@example.com",
    "local part of 65 octets": "a" * 65 + "@example.com",
    "domain over 255 octets once encoded": "shopper@" + ("ü" * 50 + ".") * 5 + "example",
    "ASCII label of 64 characters": "shopper@" + "a" * 64 + ".example",
    # RFC 5321 4.5.3.1.3: the path "<local@domain>" is at most 256 octets, so the address 254
    # once encoded; 143 characters here (under EmailField's 254), 315 octets encoded.
    "address over 254 octets once encoded": "a" * 64 + "@" + ".".join([LONG_CJK_LABEL] * 4) + ".de",
    # IDNA 2003 (Django's SMTP backend) maps these to ss and σ; IDNA 2008 registries keep them
    # (straße.de is xn--strae-oqa.de, not strasse.de): the mail would go to another domain.
    "sharp s in the domain (IDNA 2003 sends to ss)": "shopper@straße.de",
    "final sigma in the domain (IDNA 2003 sends to σ)": "shopper@ας.gr",
    # IDNA's nameprep maps these to nothing (RFC 3454 table B.1): shown and stored as one domain,
    # sent to another.
    "combining grapheme joiner (IDNA would drop it)": "cgj@ex\u034fample.com",
    "variation selector 16 (IDNA would drop it)": "shopper@ex\ufe0fample.com",
    "Mongolian free variation selector (IDNA would drop it)": "shopper@ex\u180bample.com",
    "Mongolian todo soft hyphen (IDNA would drop it)": "shopper@ex\u1806ample.com",
    "word joiner (IDNA would drop it)": "shopper@ex\u2060ample.com",
    # Blank-looking letters (Default_Ignorable_Code_Point, or drawn blank) that IDNA encodes as xn--.
    "Hangul filler U+3164": "shopper@\u3164example.com",
    "Hangul choseong filler U+115F": "shopper@ex\u115fample.com",
    "Hangul jungseong filler U+1160": "shopper@ex\u1160ample.com",
    "halfwidth Hangul filler U+FFA0": "shopper@ex\uffa0ample.com",
    "braille pattern blank U+2800": "shopper@example\u2800.com",
    "Khmer inherent vowel U+17B4": "shopper@ex\u17b4ample.com",
    "tag character U+E0041": "shopper@example.com\U000e0041",
    "combining grapheme joiner in the local part": "shop\u034fper@example.com",
    "Hangul filler in the local part": "shop\u3164per@example.com",
}


def cart_fill(client, lines=(("procfile-mug", 1),)) -> None:
    """Press *Add to cart* for each ``(sku, quantity)`` of ``lines`` with Django's test ``client``."""
    token = hidden("csrfmiddlewaretoken", client.get("/").content.decode())
    for sku, quantity in lines:
        response = client.post("/cart/add/", {"product": sku, "quantity": quantity, "csrfmiddlewaretoken": token})
        assert response.status_code == 303, response.content.decode()


def checkout_data(*, token, email="shopper@example.com", lines=(("procfile-mug", 1),), extra_rows=0, **overrides):
    """Return the POST fields of the checkout form: management form, header fields and lines.

    The checkout page sends the cart's lines back as hidden fields: ``lines`` must be what the
    checkout page of ``token`` showed (page_lines), or the POST is refused as out of date.
    """
    rows = list(lines) + [("", "")] * extra_rows
    data = {
        "token": str(token),
        "email": email,
        "payment_method": "pm_card_visa",
        "lines-TOTAL_FORMS": str(len(rows)),
        "lines-INITIAL_FORMS": "0",
        "lines-MIN_NUM_FORMS": "1",
        "lines-MAX_NUM_FORMS": "20",
    }
    for index, (sku, quantity) in enumerate(rows):
        data[f"lines-{index}-product"] = sku
        data[f"lines-{index}-quantity"] = str(quantity)
    data.update(overrides)
    return data


def start_smtp() -> tuple[RecordingSMTP, Controller]:
    """Start a RecordingSMTP on a free port; return it and its controller (call ``.stop()``)."""
    recorder = RecordingSMTP(port=free_port())
    controller = Controller(recorder, hostname=recorder.host, port=recorder.port)
    controller.start()
    return recorder, controller


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects (to see the 303)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base: str):
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), self._NoRedirect)

    def add_to_cart(self, sku: str = "procfile-mug", quantity: int = 1) -> None:
        """Press the catalogue's *Add to cart* for ``quantity`` of ``sku``, as a shopper does."""
        token = hidden("csrfmiddlewaretoken", self.request("/")[2])
        status, _, page = self.request(
            "/cart/add/", {"product": sku, "quantity": quantity, "csrfmiddlewaretoken": token}
        )
        assert status == 303, page

    def request(self, path: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
        """GET ``path`` (POST ``data`` as a form when given) with extra ``headers``; return (status, headers, body)."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        headers = {"Referer": self.base + path, **(headers or {})}
        request = urllib.request.Request(self.base + path, data=body, headers=headers)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()


def page_lines(page: str) -> list[tuple[str, int]]:
    """Return the ``(sku, quantity)`` lines that a checkout page's form sends back (its hidden fields)."""
    products = dict(re.findall(r'name="lines-(\d+)-product" value="([^"]*)"', page))
    quantities = dict(re.findall(r'name="lines-(\d+)-quantity" value="([^"]*)"', page))
    return [(products[index], int(quantities[index])) for index in sorted(products, key=int)]


def hidden(name: str, page: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no hidden field {name} in the page"
    return match.group(1)


@dataclass
class Element:
    """An HTML element: its tag, attributes and text content (whitespace collapsed)."""

    tag: str
    attrs: dict[str, str]
    text: str = ""


class _ElementFinder(HTMLParser):
    """Find the elements matching a chain of simple selectors (``#id``, ``.class``, ``[attr=value]``)."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self, chain: list[str]):
        super().__init__(convert_charrefs=True)
        self.chain, self.level, self.stack = chain, 0, []
        self.found: list[Element] = []
        self.parts: list[str] = []
        self.capturing = False

    @staticmethod
    def matches(selector: str, attrs: dict) -> bool:
        if selector.startswith("#"):
            return attrs.get("id") == selector[1:]
        if selector.startswith("."):
            return selector[1:] in (attrs.get("class") or "").split()
        name, _, value = selector.strip("[]").partition("=")
        return attrs.get(name) == value

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        role = None
        if self.matches(self.chain[self.level], attrs):
            role = "target" if self.level == len(self.chain) - 1 else "ancestor"
        if role == "target":
            self.found.append(Element(tag, attrs))
            if not self.found[1:]:  # the text of the first match only
                self.capturing = tag not in self.VOID
        if tag in self.VOID:
            return
        self.stack.append((tag, role))
        self.level += role == "ancestor"

    def handle_endtag(self, tag):
        if not any(open_tag == tag for open_tag, _ in self.stack):
            return  # a stray end tag
        while self.stack:  # also close the elements left open inside this one (HTML's implied end tags)
            open_tag, role = self.stack.pop()
            if role == "ancestor":
                self.level -= 1
            elif role == "target" and self.capturing:
                self.capturing = False
                self.found[0].text = " ".join("".join(self.parts).split())
            if open_tag == tag:
                return

    def handle_data(self, data):
        if self.capturing:
            self.parts.append(data)


def element(page: str, selector: str) -> Element:
    """Return the first element of ``page`` matching ``selector``: its tag, attributes and text.

    ``selector`` is a space-separated chain of ``#id``, ``.class`` or ``[attr=value]``, each inside
    the previous one (``".field-total_display .readonly"``). Raise AssertionError when nothing
    matches, or when a lone ``#id`` matches several elements, so a test fails on the element that
    should carry the value.
    """
    chain = selector.split()
    finder = _ElementFinder(chain)
    finder.feed(page)
    finder.close()
    assert finder.found, f"no element {selector!r} in the page"
    if len(chain) == 1 and selector.startswith("#"):
        assert len(finder.found) == 1, f"{len(finder.found)} elements {selector!r} in the page"
    return finder.found[0]


def element_text(page: str, selector: str) -> str:
    """Return the text (whitespace collapsed) of the first element of ``page`` matching ``selector``."""
    return element(page, selector).text


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse a Prometheus text exposition into ``{(sample name, frozenset of label pairs): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str, token: str | None = None, **headers: str) -> tuple[int, dict, dict[tuple[str, frozenset], float]]:
    """GET the metrics at ``url`` (with ``Authorization: Bearer token`` when given); return the status,
    the headers and, for a 200, the samples (metric_samples), else an empty dict."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, dict(response.headers), metric_samples(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), {}


def sample(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Return the value of sample ``name`` with exactly ``labels`` in ``samples``, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)
