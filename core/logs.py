"""Log lines on stdout (factor 11): JSON for machines by default, or today's text for people.

The logging configurations of Django (logging_config) and gunicorn (gunicorn_logconfig), their
formatters and filters: LOG_FORMAT=json writes one JSON object per line (python-json-logger),
LOG_FORMAT=text readable lines. Documented in docs/observability.md#logs.
"""

import io
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from django.core.exceptions import ImproperlyConfigured
from pythonjsonlogger.json import JsonFormatter

from core.context import FIELDS, ContextFilter, current

LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def log_format() -> str:
    """Return LOG_FORMAT ("json" when unset or empty; any case accepted).

    Raise ImproperlyConfigured naming the variable for any value but json or text.
    """
    value = os.environ.get("LOG_FORMAT", "")
    chosen = value.strip().lower() or "json"
    if chosen not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT={value!r} is not a log format: use json or text")
    return chosen


def program_name(argv: list[str] | None = None) -> str:
    """Return what a command line runs: a management command's name, else its program's name.

    ``argv`` (a list of str) defaults to sys.argv: ``["manage.py", "shell"]`` gives "shell",
    ``[".venv/bin/gunicorn", …]`` and ``python -m gunicorn`` give "gunicorn", ``pytest`` "pytest".
    """
    argv = sys.argv if argv is None else argv
    names = [os.path.basename(arg) for arg in argv]
    if names and names[0].startswith("python"):
        names = names[1:]
    if names and names[0] == "manage.py" and len(names) > 1:
        return names[1]
    if len(argv) > 1 and os.path.basename(os.path.dirname(argv[0])) == "gunicorn":  # python -m gunicorn
        return "gunicorn"
    return names[0] if names else "python"


class TextFormatter(logging.Formatter):
    """logging.Formatter that appends ``[request_id=… job_id=… order_id=…]`` when a record has any."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        ids = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, None))
        return f"{line} [{ids}]" if ids else line


class JsonLineFormatter(JsonFormatter):
    """python-json-logger's formatter with Formation's field names (docs/observability.md#logs)."""

    def __init__(self, *, process_type: str, release: str):
        super().__init__(
            ["asctime", "levelname", "process_type", "release", "process", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "process": "pid", "name": "logger"},
            static_fields={"process_type": process_type, "release": release},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        """Return the record's time in ISO 8601, UTC, to the microsecond (2026-11-30T09:19:03.696385+00:00)."""
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat()


class AccessFilter(logging.Filter):
    """Give a gunicorn access record its request as fields (and request id, from the response's
    X-Request-ID header, since the request's context is gone by the time gunicorn logs it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):  # gunicorn's SafeAtoms: "-" for what is missing
            record.http_method = atoms["m"]
            record.path = atoms["U"]
            record.status = int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"]
            record.duration_ms = atoms["M"]
            if atoms["{x-request-id}o"] != "-":
                record.request_id = atoms["{x-request-id}o"]
        return True


class QuietJobs(logging.Filter):
    """Demote RQ's INFO lines about the jobs ``job_ids`` to DEBUG, and drop them below DEBUG.

    The periodic jobs (settings.PERIODIC_JOBS) run every second or two, and RQ writes four INFO
    lines per run ("maintenance: … (id)", "Successfully completed …", "Job OK", "result is kept"),
    burying the shop's own lines while nothing happens. Their own lines, logged only when they did
    something, and RQ's warnings and errors about them are kept. A record is about one of them
    when its bound job id (core.context) or one of its arguments is that job's id.
    """

    def __init__(self, job_ids=()):
        super().__init__()
        self.job_ids = frozenset(job_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("rq."):
            return True
        arguments = record.args if isinstance(record.args, tuple) else ()
        job_id = getattr(record, "job_id", None) or current().get("job_id")
        if job_id not in self.job_ids and not self.job_ids.intersection(
            argument for argument in arguments if isinstance(argument, str)
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _formatter(fmt: str, process_type: str, release: str) -> dict:
    if fmt == "json":
        return {"()": JsonLineFormatter, "process_type": process_type, "release": release}
    return {"()": TextFormatter, "fmt": TEXT_FORMAT}


def logging_config(*, level: str, fmt: str, process_type: str, release: str, quiet_job_ids=()) -> dict:
    """Return the dictConfig for settings.LOGGING: everything to stdout in ``fmt`` ("json" or "text").

    ``process_type`` and ``release`` (str) are the ``process_type`` and ``release`` fields of every
    JSON line; the caller passes them (settings.PROCESS_TYPE and settings.RELEASE), so this module
    reads no Procfile.
    ``level`` (a level name) is the root logger's; the SQL of django.db.backends stays off below
    INFO. Every line gets the log context (core.context.ContextFilter). RQ's INFO lines about the
    jobs of ``quiet_job_ids`` (an iterable of job ids: the periodic jobs') are DEBUG lines (QuietJobs).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": ContextFilter},
            "quiet_jobs": {"()": QuietJobs, "job_ids": list(quiet_job_ids)},
        },
        "formatters": {"line": _formatter(fmt, process_type, release)},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "line",
                "filters": ["context", "quiet_jobs"],
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {"django.db.backends": {"level": "INFO"}},
    }


def gunicorn_logconfig(fmt: str, process_type: str, release: str) -> dict:
    """Return gunicorn's ``logconfig_dict`` for ``fmt``: {} for "text" (gunicorn's own lines, as
    before), else its error and access logs as JSON lines on stdout (access lines through AccessFilter).

    gunicorn merges it over its CONFIG_DEFAULTS (gunicorn/glogging.py); Django's LOGGING,
    applied when the app loads, leaves these two loggers alone (disable_existing_loggers off).
    """
    if fmt == "text":
        return {}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"}
    return {
        "filters": {"context": {"()": ContextFilter}, "access": {"()": AccessFilter}},
        "formatters": {"line": _formatter(fmt, process_type, release)},
        "handlers": {
            "stdout": {**handler, "filters": ["context"]},
            "access": {**handler, "filters": ["access", "context"]},
        },
        "root": {"level": "INFO", "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }


class LogLines(io.TextIOBase):
    """A text stream that logs each complete line written to it (INFO on ``logger``; blank lines
    dropped, the rest on close), so a command's progress output becomes log lines like any other."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip():
                self.logger.info("%s", line.strip())
        return len(text)

    def close(self) -> None:
        if self.pending.strip():
            self.logger.info("%s", self.pending.strip())
        self.pending = ""
        super().close()
