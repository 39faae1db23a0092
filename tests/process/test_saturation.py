"""PostgreSQL saturated: another client holds every connection slot the shop's role can get while
shoppers order. Web answers from the connection a gunicorn worker still holds, or the 503 page with
Retry-After; work horses are refused, put their jobs back and their workers back off, in a few log
lines; once the slots come back every accepted order is paid once, with one confirmation.

The formation is the Procfile's own lines: web (two gunicorn workers), three workers, the scheduler
and the mailer, with the process tests' fast timings (embedded.harness.FAST). Prints its figures
(``pytest -s``): answers, 503s, orders accepted and still pending, log lines, seconds to settle.
"""

import contextlib
import re
import threading
import time
import urllib.error
from collections import Counter
from dataclasses import dataclass, field

import django_rq
import pytest
from django.conf import settings
from django.db import connection

from embedded.polling import wait_until
from embedded.shopper import Browser, checkout_data, hidden, page_lines
from orders.models import Order, OrderStatus
from tests import factories
from tests.process.support import assert_exactly_once
from tests.support.databases import ALL_DATABASES
from tests.support.slots import SlotHolder

pytestmark = [pytest.mark.process, pytest.mark.faults, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

WORKERS = 3
SHOPPERS = 4
# Seconds the slots are held while the shoppers order, and the most requests they send meanwhile.
SATURATION_SECONDS = 15
MOST_REQUESTS = 500
# Seconds a shopper waits between two requests, and after a 503 before starting a new purchase.
THINK_SECONDS = 0.1
# Seconds for every accepted order to be paid once the slots are back: a worker that backed off
# waits at most DATABASE_BACKOFF_CAP (60 s), and three of them draw their waits independently.
SETTLE_WITHIN = 60
# Log lines the worker, scheduler and mailer processes may write while PostgreSQL refuses them:
# RQ's line per job taken (a worker takes one per backoff wait) and a refusal line per worker per
# 10 s, about 5 a worker in 15 s; not a traceback per attempt (159 lines, 66 of them tracebacks,
# when RQ spent its retries at once).
MOST_BACKGROUND_LINES = 60


class Unavailable(Exception):
    """Web answered 503: the shopper starts a new purchase after a pause."""


@dataclass
class Answers:
    """What the shoppers saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    retry_after: Counter = field(default_factory=Counter)  # Retry-After of each 503 ("" when absent)
    unexpected: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)  # ids of the accepted checkouts (303)

    @property
    def requests(self) -> int:
        with self.lock:
            return sum(self.statuses.values())


class Shopper(threading.Thread):
    """A shopper buying the mug in a loop (catalogue, add to cart, checkout page, checkout) until
    ``end`` (time.monotonic()) or until the shoppers together sent MOST_REQUESTS."""

    def __init__(self, number: int, base: str, answers: Answers, end: float):
        super().__init__(name=f"shopper-{number}", daemon=True)
        self.number, self.base, self.answers, self.end = number, base, answers, end

    def run(self) -> None:
        while self._more():
            with contextlib.suppress(Unavailable):
                self._purchase(Browser(self.base))
            time.sleep(THINK_SECONDS)

    def _more(self) -> bool:
        return time.monotonic() < self.end and self.answers.requests < MOST_REQUESTS

    def _ask(self, browser: Browser, path: str, data: dict | None, ok: int) -> tuple[dict, str]:
        if not self._more():
            raise Unavailable("time or requests are up")
        time.sleep(THINK_SECONDS)
        try:
            status, headers, body = browser.request(path, data)
        except (urllib.error.URLError, OSError) as exc:
            status, headers, body = 0, {}, f"{type(exc).__name__}: {exc}"
        with self.answers.lock:
            self.answers.statuses[status] += 1
            if status == 503:
                self.answers.retry_after[headers.get("Retry-After", "")] += 1
            elif status != ok:
                self.answers.unexpected.append(f"{'POST' if data else 'GET'} {path}: {status} {body[:200]}")
        if status != ok:
            raise Unavailable(status)
        return headers, body

    def _purchase(self, browser: Browser) -> None:
        page = self._ask(browser, "/", None, 200)[1]
        form = {"product": "procfile-mug", "quantity": 1, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
        self._ask(browser, "/cart/add/", form, 303)
        page = self._ask(browser, "/checkout/", None, 200)[1]
        data = {
            **checkout_data(token=hidden("token", page), email=f"shopper{self.number}@example.com"),
            "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
        }
        data.update(_lines(page_lines(page)))
        headers = self._ask(browser, "/checkout/", data, 303)[0]
        match = re.search(r"/orders/([0-9a-f-]{36})/", headers.get("Location", ""))
        with self.answers.lock:
            self.answers.orders.append(match.group(1) if match else "?")


def _lines(lines: list[tuple[str, int]]) -> dict[str, str]:
    """The checkout form's line fields for the lines its page showed."""
    fields = {"lines-TOTAL_FORMS": str(len(lines))}
    for index, (sku, quantity) in enumerate(lines):
        fields[f"lines-{index}-product"], fields[f"lines-{index}-quantity"] = sku, str(quantity)
    return fields


def _web_backends() -> list[int]:
    """Return the PostgreSQL backend pids of web's gunicorn workers (application_name formation/web…)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'formation/web%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def _line_counts(processes) -> list[int]:
    return [len(process.output().splitlines()) for process in processes]


def test_saturated_postgresql_degrades_gently_and_every_accepted_order_is_paid_once(formation, smtp):
    factories.product()
    web = formation.start("web", WEB_CONCURRENCY="2")
    for kind in ("scheduler", "mailer", *["worker"] * WORKERS):
        formation.start(kind)
    base = f"http://127.0.0.1:{web.env['PORT']}"

    # Before: an order goes through, and both gunicorn workers hold a connection (a worker opens it
    # on its first request and keeps it for CONN_MAX_AGE).
    before = Answers()
    Shopper(0, base, before, time.monotonic() + 30)._purchase(Browser(base))
    wait_until(lambda: Order.objects.filter(status=OrderStatus.PAID).exists(), deadline=30, message="a paid order")

    def both_web_workers_connected() -> bool:
        Browser(base).request("/")
        return len(_web_backends()) >= 2

    wait_until(both_web_workers_connected, deadline=20, message="both web workers' connections")

    holder = SlotHolder()
    try:
        held = holder.take_all(settle=1.0)
        # One gunicorn worker loses its connection (as at CONN_MAX_AGE, or an idle timeout): every
        # request it takes now needs a new one, which PostgreSQL refuses. The slot goes to the holder.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [_web_backends()[0]])
        held = holder.take_all(settle=1.0)

        marks = _line_counts(formation.processes)
        answers = Answers()
        saturated = time.monotonic()
        shoppers = [Shopper(number, base, answers, saturated + SATURATION_SECONDS) for number in range(SHOPPERS)]
        for shopper in shoppers:
            shopper.start()
        for shopper in shoppers:
            shopper.join(timeout=SATURATION_SECONDS + 30)
        assert not any(shopper.is_alive() for shopper in shoppers), "a shopper did not stop"
        pending = Order.objects.filter(status=OrderStatus.PENDING).count()
        outputs = [
            process.output().splitlines()[mark:] for process, mark in zip(formation.processes, marks, strict=True)
        ]
    finally:
        holder.release()
    released = time.monotonic()

    orders = list(Order.objects.all())
    wait_until(
        lambda: not Order.objects.filter(status=OrderStatus.PENDING).exists(),
        deadline=SETTLE_WITHIN,
        message="every accepted order to be processed once the slots are back",
    )
    settled = time.monotonic() - released
    assert_exactly_once(orders, smtp)
    assert all(process.alive() for process in formation.processes)
    failed = {name: django_rq.get_queue(name).failed_job_registry.get_job_ids() for name in settings.RQ_QUEUES}

    web_lines = len(outputs[0])
    background_lines = sum(len(lines) for lines in outputs[1:])
    tracebacks = sum("Traceback" in line for lines in outputs for line in lines)
    # Since the holder began: a worker's first refusal line may come before the shoppers start.
    refusal_lines = sum(process.output().count("PostgreSQL refused connections") for process in formation.processes)
    print(
        f"\nsaturation: {held} slots held for {SATURATION_SECONDS} s; {answers.requests} requests, "
        f"{answers.statuses[503]} answered 503 (Retry-After {dict(answers.retry_after)}), statuses "
        f"{dict(answers.statuses)}; {len(answers.orders)} orders accepted, {pending} still pending at the end; "
        f"log lines: web {web_lines}, worker+scheduler+mailer {background_lines}, refusal lines {refusal_lines}, "
        f"{tracebacks} tracebacks; settled {settled:.1f} s after the slots came back; {len(orders)} orders paid once"
    )
    assert failed == {name: [] for name in settings.RQ_QUEUES}, "a job failed instead of waiting"
    assert answers.unexpected == []
    assert answers.statuses[503] > 0 and set(answers.retry_after) == {"5"}
    assert answers.orders and pending > 0, "orders were accepted and horses were refused meanwhile"
    assert tracebacks == 0
    assert refusal_lines > 0 and background_lines <= MOST_BACKGROUND_LINES
    # web: its access line and the 503's one warning per request; 3 leaves room for start-up lines.
    assert web_lines <= 3 * answers.requests
