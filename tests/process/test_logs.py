"""Log lines of the Procfile's process types, as processes: JSON by default, today's text with
LOG_FORMAT=text, and a checkout's request id on the web's, the worker's and the mailer's lines
of its order."""

import json
import re
import uuid

import pytest

from embedded.harness import run_release
from embedded.polling import wait_until
from embedded.shopper import Browser, checkout_data, hidden
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order
from processes.procfile import READY_LINES
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

# Every JSON line has these (core/logs.py).
FIELDS = {"time", "level", "process_type", "release", "pid", "logger", "message"}
# The release the processes below run (RELEASE_VERSION), which every line names.
RELEASE = "v-logs-7"
# Today's text line: "2026-11-30 09:19:10,145 INFO mailer 15245 mailer: started, …".
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \d+ .+")


def json_lines(output: str) -> list[dict]:
    """Return every line of ``output`` parsed as a JSON object; fail naming the first line that is
    not one or lacks a field of FIELDS."""
    records = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n--- output ---\n{output}") from None
        assert isinstance(record, dict) and set(record) >= FIELDS, line
        records.append(record)
    return records


def lines_with(process, **fields) -> list[dict]:
    """Return the JSON lines of ``process``'s output whose ``fields`` have the given values."""
    return [record for record in json_lines(process.output()) if all(record.get(k) == v for k, v in fields.items())]


def is_json(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def test_a_request_id_sent_at_checkout_is_on_the_web_worker_and_mailer_lines_of_its_order(formation, smtp):
    factories.product()
    web, worker, mailer = (formation.start(kind, LOG_FORMAT="json") for kind in ("web", "worker", "mailer"))
    request_id = f"checkout-{uuid.uuid4().hex}"
    browser = Browser(f"http://127.0.0.1:{web.env['PORT']}")
    browser.add_to_cart()
    page = browser.request("/checkout/")[2]
    form = {**checkout_data(token=hidden("token", page)), "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}

    status, headers, _ = browser.request("/checkout/", form, headers={"X-Request-ID": request_id})

    assert (status, headers["X-Request-ID"]) == (303, request_id)
    order = Order.objects.get()
    assert order.request_id == request_id
    sent = OutboxMessage.objects.filter(key=f"order-paid-{order.pk}", status=OutboxStatus.SENT)
    wait_until(sent.exists, deadline=30, message="the confirmation recorded as sent")
    # web: the access line of the POST (gunicorn writes it once the response is sent) and the
    # line of the order's creation.
    access = wait_until(
        lambda: lines_with(web, logger="gunicorn.access", http_method="POST", path="/checkout/"),
        deadline=10,
        message="the access line of the checkout POST",
    )
    assert [(line["status"], line["request_id"], line["process_type"]) for line in access] == [(303, request_id, "web")]
    [created] = lines_with(web, logger="orders.services")
    assert (created["request_id"], created["order_id"]) == (request_id, str(order.pk))
    # worker: every line of the order's job, by the worker and its work horse.
    job_lines = lines_with(worker, job_id=order.job_id)
    assert {(line["request_id"], line["process_type"]) for line in job_lines} == {(request_id, "worker")}, job_lines
    [paid] = [line for line in job_lines if line["message"].startswith(f"order {order.pk} paid")]
    assert paid["order_id"] == str(order.pk)
    # mailer: the lines of sending the confirmation, with the ids of the job that wrote it.
    [sending] = lines_with(mailer, request_id=request_id)
    assert sending["message"].startswith(f"outbox {sent.get().pk}: sent")
    assert (sending["order_id"], sending["job_id"], sending["process_type"]) == (str(order.pk), order.job_id, "mailer")


@pytest.mark.parametrize("kind", ["web", "worker", "scheduler", "mailer"])
def test_each_process_type_writes_json_lines_by_default_and_is_still_seen_ready(formation, kind):
    formation.env.pop("LOG_FORMAT", None)  # unset: production's default
    process = formation.start(
        kind, RELEASE_VERSION=RELEASE
    )  # waits for READY_LINES[kind] (or web's /health) in JSON lines
    if kind == "web":
        assert Browser(f"http://127.0.0.1:{process.env['PORT']}").request("/cart/")[0] == 200
        access = wait_until(
            lambda: lines_with(process, logger="gunicorn.access", path="/cart/"), deadline=10, message="access line"
        )
        assert [line["status"] for line in access] == [200]
        assert re.fullmatch(r"[0-9a-f]{32}", access[0]["request_id"])  # made for it: none was sent
    else:
        assert any(READY_LINES[kind] in line["message"] for line in lines_with(process))
    assert {(line["process_type"], line["release"]) for line in json_lines(process.output())} == {(kind, RELEASE)}


def test_the_release_phase_writes_json_lines_by_default(formation):
    formation.env.pop("LOG_FORMAT", None)
    release = run_release({**formation.env, "RELEASE_VERSION": RELEASE})
    assert (release.returncode, release.stderr) == (0, "")
    lines = json_lines(release.stdout)
    assert {(line["process_type"], line["release"]) for line in lines} == {("release", RELEASE)}
    assert "No migrations to apply." in [line["message"] for line in lines]


@pytest.mark.parametrize("kind", ["web", "worker", "mailer"])
def test_log_format_text_keeps_readable_lines(formation, kind):
    process = formation.start(kind, LOG_FORMAT="text")
    lines = process.output().splitlines()
    assert lines and not any(is_json(line) for line in lines), lines
    if kind != "web":  # gunicorn's own lines in text mode, as before
        [ready] = [line for line in lines if READY_LINES[kind] in line]
        assert TEXT_LINE.fullmatch(ready), ready


@pytest.mark.parametrize("kind", ["web", "worker"])
def test_a_bad_log_format_stops_the_process_with_one_line_naming_it(formation, kind):
    process = formation.start(kind, wait=False, LOG_FORMAT="yaml")
    assert process.wait(deadline=30) == 1
    assert process.output().strip().splitlines() == [
        "configuration error: LOG_FORMAT='yaml' is not a log format: use json or text"
    ]
