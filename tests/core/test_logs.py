"""Request ids (X-Request-ID), the log context and the log formats, in this process."""

import json
import logging
import re

import pytest

from core import context
from core.logs import JsonLineFormatter, QuietJobs, TextFormatter, logging_config
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


def rq_record(logger: str, level: int, message: str, *args) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, message, args, None)


@pytest.fixture
def rq_logger():
    """A logger under rq. whose level a test sets (QuietJobs asks it whether DEBUG is on)."""
    logger = logging.getLogger("rq.quiet-test")
    yield logger
    logger.setLevel(logging.NOTSET)


def test_rqs_info_lines_about_a_periodic_job_are_dropped_at_info(rq_logger):
    rq_logger.setLevel(logging.INFO)
    quiet = QuietJobs(job_ids=["orders-sweep-pending"])
    started = rq_record(rq_logger.name, logging.INFO, "%s: %s (%s)", "maintenance", "sweep()", "orders-sweep-pending")
    assert not quiet.filter(started)
    assert (started.levelno, started.levelname) == (logging.DEBUG, "DEBUG")
    with context.bind(job_id="orders-sweep-pending"):  # "Job OK", "result is kept": the bound job id
        assert not quiet.filter(context_record := rq_record(rq_logger.name, logging.INFO, "Job OK"))
    assert context_record.levelname == "DEBUG"


def test_rqs_lines_about_a_periodic_job_show_at_debug(rq_logger):
    rq_logger.setLevel(logging.DEBUG)
    line = rq_record(rq_logger.name, logging.INFO, "%s: %s (%s)", "maintenance", "sweep()", "orders-sweep-pending")
    assert QuietJobs(job_ids=["orders-sweep-pending"]).filter(line)
    assert line.levelname == "DEBUG"


@pytest.mark.parametrize(
    ("logger", "level", "job_id"),
    [
        ("rq.quiet-test", logging.INFO, "process-order-1"),  # an order's job: its lines stay
        ("rq.quiet-test", logging.WARNING, "orders-sweep-pending"),  # a periodic job's trouble stays
        ("orders.queueing", logging.INFO, "orders-sweep-pending"),  # what the job itself did stays
    ],
)
def test_other_lines_are_kept_as_they_are(rq_logger, logger, level, job_id):
    rq_logger.setLevel(logging.INFO)
    line = rq_record(logger, level, "%s: %s (%s)", "maintenance", "job()", job_id)
    assert QuietJobs(job_ids=["orders-sweep-pending"]).filter(line)
    assert line.levelno == level


def test_settings_quiet_rqs_lines_about_every_periodic_job(settings):
    handler = settings.LOGGING["handlers"]["stdout"]
    assert handler["filters"] == ["context", "quiet_jobs"]
    assert settings.LOGGING["filters"]["quiet_jobs"]["job_ids"] == [job["id"] for job in settings.PERIODIC_JOBS]
