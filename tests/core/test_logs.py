"""Request ids (X-Request-ID), the log context and the log formats, in this process."""

import json
import logging
import re

import pytest

from core import context
from core.logs import JsonLineFormatter, TextFormatter, logging_config
from tests.support.databases import ALL_DATABASES

NEW_ID = re.compile(r"[0-9a-f]{32}")


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
@pytest.mark.parametrize(
    "sent",
    [
        "0123456789abcdef0123456789abcdef",
        "3f2c8a4e-9b1d-4c7a-8e2f-5d6b7a8c9d0e",  # a UUID, as Envoy and many proxies make them
        "Zm9ybWF0aW9uLXJlcXVlc3Q+/=",  # Heroku's alphabet: letters, digits, + / = -
        "x" * 200,
    ],
)
def test_a_valid_request_id_is_returned_as_sent(client, sent):
    assert client.get("/cart/", headers={"X-Request-ID": sent})["X-Request-ID"] == sent


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
@pytest.mark.parametrize(
    "sent",
    [
        None,
        "",
        "too-short-19-chars0",
        "x" * 201,
        "has spaces in it, twenty plus",
        'quote"d-0123456789abcdef',
        "new\\nline-0123456789abcdef",
        "ünïcode-0123456789abcdef",
    ],
)
def test_a_missing_or_bad_request_id_is_replaced_by_a_new_one(client, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    assert NEW_ID.fullmatch(client.get("/cart/", headers=headers)["X-Request-ID"])


@pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)
def test_each_request_gets_its_own_new_id_and_none_outlives_it(client):
    first, second = (client.get("/cart/")["X-Request-ID"] for _ in range(2))
    assert first != second
    assert context.current() == {}


def record(message: str = "hello") -> logging.LogRecord:
    """Return a record of ``message`` that went through ContextFilter, as every handler's do."""
    entry = logging.LogRecord("orders.services", logging.INFO, __file__, 1, message, None, None)
    context.ContextFilter().filter(entry)
    return entry


def test_bound_ids_are_on_each_record_until_the_block_ends():
    with context.bind(request_id="r" * 20, order_id="o-1"):
        with context.bind(job_id="j-1", order_id=None):  # None: keep what is bound
            inner = record()
        outer = record()
    after = record()
    assert (inner.request_id, inner.job_id, inner.order_id) == ("r" * 20, "j-1", "o-1")
    assert (outer.request_id, outer.order_id, hasattr(outer, "job_id")) == ("r" * 20, "o-1", False)
    assert not any(hasattr(after, name) for name in context.FIELDS)


def test_a_json_line_has_the_fields_and_only_the_ids_there_are():
    with context.bind(request_id="r" * 20):
        line = json.loads(JsonLineFormatter(process_type="worker", release="v42").format(record("order paid")))
    assert list(line) == ["time", "level", "process_type", "release", "pid", "logger", "message", "request_id"]
    assert (line["level"], line["process_type"], line["release"], line["logger"], line["message"]) == (
        "INFO",
        "worker",
        "v42",
        "orders.services",
        "order paid",
    )
    assert line["time"].endswith("+00:00")


def test_json_log_lines_are_configured_with_the_process_type_and_release():
    assert logging_config(level="INFO", fmt="json", process_type="worker", release="v42")["formatters"]["line"] == {
        "()": JsonLineFormatter,
        "process_type": "worker",
        "release": "v42",
    }


def test_a_text_line_appends_the_ids_there_are():
    formatter = TextFormatter("%(levelname)s %(message)s")
    with context.bind(order_id="o-1", job_id="j-1"):
        assert formatter.format(record()) == "INFO hello [job_id=j-1 order_id=o-1]"
    assert formatter.format(record()) == "INFO hello"
