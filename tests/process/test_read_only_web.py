"""web, started from the Procfile's own line, meets a PostgreSQL that refuses writes: the shopper's
add to cart is a 503 with Retry-After and the security headers, and web's log says so in one line
per refused request, without a traceback."""

import json

import pytest

from embedded.polling import wait_until
from embedded.shopper import Browser, hidden
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

REQUESTS = 3


def test_add_to_cart_while_read_only_is_a_503_and_one_log_line_per_request(formation, read_only, product):
    web = formation.start("web")
    browser = Browser(f"http://127.0.0.1:{web.env['PORT']}")
    browser.add_to_cart()  # the shopper has a session and a cart before the failover
    token = hidden("csrfmiddlewaretoken", browser.request("/cart/")[2])

    read_only(True)  # also ends web's connection: its next one is read-only, as on a standby
    start = len(web.output().splitlines())
    for _ in range(REQUESTS):
        status, headers, _ = browser.request(
            "/cart/add/", {"product": "procfile-mug", "quantity": 1, "csrfmiddlewaretoken": token}
        )
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"

    def warnings() -> list[dict]:
        lines = web.output().splitlines()[start:]
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return [r for r in records if r["level"] in ("WARNING", "ERROR", "CRITICAL")]

    wait_until(lambda: len(warnings()) >= REQUESTS, deadline=5, message="web's lines for the refused requests")
    assert [r["logger"] for r in warnings()] == ["core.middleware"] * REQUESTS, warnings()
    # The first request may still meet the session that the switch ended (a lost connection, as in
    # a real failover); the ones after it meet the read-only database. Each is one line.
    messages = [r["message"] for r in warnings()]
    assert all(m.startswith("database unavailable (") and " for POST /cart/add/" in m for m in messages), messages
    assert messages[-1].startswith("database unavailable (read-only) for POST /cart/add/"), messages
    assert "Traceback" not in web.output()
    assert all("exc_info" not in r for r in warnings())
