"""The log context: which request, job and order the code running now works for.

Up to three ids (FIELDS), each a string or absent, bound for a block with bind() and copied onto
every log record by ContextFilter, so each log line carries them where there is one. Documented in
docs/observability.md#request-ids.
"""

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

# The HTTP request that caused the work (request_id_from_header), the RQ job being performed, the order.
FIELDS = ("request_id", "job_id", "order_id")

# One ContextVar: ids bound in a request or a job never leak into the next one, and a forked RQ work
# horse starts with its parent's. Who binds what: core.middleware.RequestIdMiddleware the request id;
# processes.worker.Worker the job id and the request id the job was enqueued with;
# orders.jobs.process_order the order id; mailer.engine.outbox_message_send the ids kept with the
# message when it was written (OutboxMessage.log_context).
_context: ContextVar[Mapping[str, str]] = ContextVar("formation_log_context", default={})  # noqa: B039 - never mutated: bind() sets a new mapping

# Heroku's router's rule for a request id it passes on (Dev Center, "HTTP Request IDs"): 20 to 200
# letters, digits, "+", "/", "=" or "-". A UUID, nginx's $request_id and uuid4().hex all pass; a
# value that could break a log line or a header (spaces, quotes, control characters) never does.
REQUEST_ID = re.compile(r"[A-Za-z0-9+/=-]{20,200}")


def current() -> dict[str, str]:
    """Return the ids bound now (a new dict of FIELDS names to strings; absent ones left out)."""
    return dict(_context.get())


@contextlib.contextmanager
def bind(**ids: object) -> Iterator[None]:
    """Add ``ids`` (names from FIELDS; None values ignored, others made strings) for the block.

    The ids bound before are kept unless named again; on exit the context is exactly what it was.
    Raise ValueError for a name not in FIELDS.
    """
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    token = _context.set({**_context.get(), **{name: str(value) for name, value in ids.items() if value is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def new_request_id() -> str:
    """Return a new request id: 32 lowercase hex digits (uuid4)."""
    return uuid.uuid4().hex


def request_id_from_header(value: str | None) -> str:
    """Return the request id to use for a request whose ``X-Request-ID`` header is ``value``.

    ``value`` itself when it matches REQUEST_ID (a proxy or client in front of us made it, so
    their logs and ours share it); otherwise (absent, too short or long, other characters) a new
    one (new_request_id).
    """
    if value is not None and REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


class ContextFilter(logging.Filter):
    """Put the bound ids (see current()) on each record as attributes; never drops a record.

    core/logs.py installs it on every handler.

    An attribute the record has already (passed with ``extra=``) wins over the context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True
