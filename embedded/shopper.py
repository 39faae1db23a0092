"""The storefront over HTTP as a shopper uses it (a cookie-keeping client, the cart, the checkout
form's fields) and reading its pages (hidden fields, elements by a simple selector)."""

import http.cookiejar
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser


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


@dataclass
class ShopperStream:
    """``shoppers`` threads that each place orders over HTTP at ``base``, one after another (a new
    session, the catalogue, *Add to cart* of ``sku``, the checkout page, its form), pausing
    ``pause`` seconds between orders, until stop().

    ``orders`` collects the id of every order placed (from the checkout's 303), ``requests`` counts
    the requests sent and ``failures`` describes each request that did not get its expected
    status (an error status, a refused or reset connection, a timeout) in the order seen.
    """

    base: str
    sku: str = "procfile-mug"
    shoppers: int = 2
    pause: float = 0.1
    orders: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._shop, args=(n,), daemon=True) for n in range(self.shoppers)]

    def start(self) -> "ShopperStream":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Let each shopper finish the order in progress, then return."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def placed(self) -> int:
        with self.lock:
            return len(self.orders)

    def _call(self, browser: Browser, path: str, data: dict | None, expected: int) -> tuple[dict, str] | None:
        with self.lock:
            self.requests += 1
        try:
            status, headers, page = browser.request(path, data)
        except OSError as exc:  # refused, reset, timed out (urllib's URLError is an OSError)
            status, headers, page = f"{type(exc).__name__}: {exc}", {}, ""
        if status != expected:
            with self.lock:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {'POST' if data else 'GET'} {path}: {status}")
            return None
        return headers, page

    def _shop(self, number: int) -> None:
        while not self.stopping.is_set():
            try:
                self._order(number)
            except AssertionError as exc:  # a page without the form fields it should have
                with self.lock:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} unexpected page: {exc}")
            self.stopping.wait(self.pause)

    def _order(self, number: int) -> None:
        """Place one order; return early (the failure recorded) when a request fails."""
        browser = Browser(self.base)
        if (answer := self._call(browser, "/", None, 200)) is None:
            return
        form = {"product": self.sku, "quantity": 1, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", answer[1])}
        if self._call(browser, "/cart/add/", form, 303) is None:
            return
        if (answer := self._call(browser, "/checkout/", None, 200)) is None:
            return
        page, email = answer[1], f"stream{number}@example.com"
        form = {
            **checkout_data(token=hidden("token", page), email=email, lines=page_lines(page)),
            "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
            "lines-INITIAL_FORMS": hidden("lines-INITIAL_FORMS", page),
        }
        if (answer := self._call(browser, "/checkout/", form, 303)) is not None:
            with self.lock:
                self.orders.append(answer[0]["Location"].rstrip("/").rpartition("/")[2])


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
