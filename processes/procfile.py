"""The Procfile's process types: their commands, and how to tell that each one is ready.

One home for these facts, read by the twelve-factor checks (processes/checks.py), the embedded
runner (``python -m embedded run``), the process tests and the benchmarks. It imports nothing
but the standard library: the checks run in the production image, which has no honcho.
"""

import os
import re
import shlex
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"

# honcho's rule (honcho.environ.PROCFILE_LINE), so these commands are the ones honcho runs; a
# line that does not match (a comment, a blank line) declares nothing.
LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")

# The log line each long-running type prints once it is ready: the worker is registered and
# blocking on its queues (RQ), the scheduler has registered the periodic jobs, the mailer has
# passed its start-up check of PostgreSQL and entered its loop. web is ready when /health
# answers 200 (see web_healthy).
READY_LINES = {
    "worker": "Listening on",
    "scheduler": "periodic jobs registered",
    "mailer": "mailer: started",
}


def process_commands(path: Path = PROCFILE) -> dict[str, str]:
    """Return the Procfile's process types and their commands, in file order.

    Raise OSError when ``path`` cannot be read, and ValueError when a type is declared twice
    (honcho refuses such a Procfile).
    """
    processes: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := LINE.match(line):
            name, command = match.groups()
            if name in processes:
                raise ValueError(f"process type {name!r} is declared twice")
            processes[name] = command
    return processes


# The one-off type: run to completion before the others start (the release phase), never scaled.
RELEASE = "release"


def formation_types(path: Path = PROCFILE) -> list[str]:
    """Return the Procfile's long-running process types (every type but the release phase), in file order.

    Raise OSError or ValueError as process_commands does.
    """
    return [name for name in process_commands(path) if name != RELEASE]


def process_type(argv: list[str] | None = None, path: Path = PROCFILE) -> str:
    """Return this process's type: PROCESS_TYPE if set, else the Procfile type running ``argv``.

    ``argv`` (a list of str) defaults to sys.argv. The Procfile's commands (``exec gunicorn …``,
    ``exec python manage.py rqworker …``) are matched by what they run: ``gunicorn`` gives "web",
    ``manage.py rqworker`` "worker", ``manage.py migrate`` "release". A process no type runs (a
    one-off ``manage.py shell``) is named after its command ("shell"), and so is every process
    when the Procfile cannot be read. RQ's work horses are forks of the worker, gunicorn's
    workers of its arbiter: same type. The entry points (manage.py, gunicorn.conf.py) call it
    once and export the answer as PROCESS_TYPE, which settings.LOGGING reads.
    """
    from core.logs import program_name

    if os.environ.get("PROCESS_TYPE"):
        return os.environ["PROCESS_TYPE"]
    program = program_name(sys.argv if argv is None else argv)
    try:
        commands = process_commands(path)
    except (OSError, ValueError):  # no readable Procfile: name the process by its command
        return program
    for name, command in commands.items():
        words = shlex.split(command)
        if words and words[0] == "exec":
            words = words[1:]
        if program_name(words) == program:
            return name
    return program


def web_healthy(port: int | str, *, timeout: float = 1.0) -> bool:
    """Return True when web on 127.0.0.1:``port`` answers ``GET /health`` with 200 within
    ``timeout`` seconds; False on any other answer or a connection error."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status (HTTPError)
        return False


def wait_for_health(
    port: int | str, *, deadline: float, interval: float = 0.1, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Poll web's ``/health`` every ``interval`` seconds until it answers 200; return True then.

    Return False after ``deadline`` seconds, or as soon as ``alive()`` is false (the process
    serving it has exited).
    """
    end = time.monotonic() + deadline
    while True:
        if web_healthy(port):
            return True
        if not alive() or time.monotonic() >= end:
            return False
        time.sleep(interval)
