"""Operate a running ``make run``: its pidfile, and ``make scale``, ``make ps``, ``make logs``, ``make restart``.

The runner (``python -m embedded run``) claims the pidfile ``.formation/dev/run.pid`` (a lock held
while it runs, so a second runner is refused at once) and writes beside it ``run.json``: its pid,
the shop's URL and the endpoint of its process manager (embedded/manager.py). The commands here
read them and send circus's commands (``set``, ``signal``, and embedded.manager's ``formation_ps``)
to that endpoint.
Per-type log files are under ``.formation/dev/logs/``. Documented in
docs/local-development.md#operate-the-running-shop.
"""

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from processes.procfile import formation_types

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".formation" / "dev"
PIDFILE = RUN_DIR / "run.pid"
STATE_FILE = RUN_DIR / "run.json"
LOG_DIR = RUN_DIR / "logs"
# The type whose process binds $PORT: one process per port, so it scales by its gunicorn workers.
WEB = "web"
# Seconds a command retries while circus is busy with another (it takes one at a time).
BUSY_RETRY_SECONDS = 10.0
# Longest unix socket path (sun_path is 108 bytes on Linux, with its NUL).
SOCKET_PATH_MAX = 107


class NotRunning(Exception):
    """No ``make run`` of this checkout is running."""


def endpoints() -> tuple[str, str]:
    """Return the process manager's (control, events) endpoints: unix sockets in RUN_DIR, or
    loopback TCP ports when the checkout's path is too long for a socket's."""
    control, events = RUN_DIR / "manager.sock", RUN_DIR / "manager-events.sock"
    if len(str(events)) <= SOCKET_PATH_MAX:
        return f"ipc://{control}", f"ipc://{events}"
    from embedded.servers import free_port

    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"


def claim(*, url: str, endpoint: str) -> IO:
    """Claim the pidfile for this runner and write RUN_DIR/run.json (pid, ``url``, ``endpoint``).

    Return the open pidfile: its lock lasts as long as it stays open (the runner's lifetime; the
    kernel releases it when the runner dies, however). Exit 1 with one line naming the running
    one (pid, URL, how to scale and stop it) when another runner holds it.
    """
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    handle = PIDFILE.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        other = read_state()
        sys.exit(
            f"formation: already running (pid {other.get('pid', '?')}, {other.get('url', '?')}): "
            f"scale it with `make scale worker=2`, see it with `make ps`, stop it with `kill {other.get('pid', 'PID')}`"
        )
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    STATE_FILE.write_text(json.dumps({"pid": os.getpid(), "url": url, "endpoint": endpoint}) + "\n")
    return handle


def release(handle: IO) -> None:
    """Empty the pidfile and let go of its lock (the runner's last step)."""
    handle.truncate(0)
    handle.close()


def read_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def running() -> dict:
    """Return the running runner's state (pid, url, endpoint); raise NotRunning when none runs."""
    try:
        with PIDFILE.open() as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return read_state()
    except FileNotFoundError:
        pass
    raise NotRunning("no formation is running in this checkout (start one with `make run`)")


def call(command: str, **properties) -> dict:
    """Send one circus ``command`` with ``properties`` to the running manager; return its answer.

    Retry for BUSY_RETRY_SECONDS while circus is busy with another command. Raise NotRunning,
    or RuntimeError with circus's reason when it refuses.
    """
    from circus.client import CallError, CircusClient

    client = CircusClient(endpoint=running()["endpoint"], timeout=5)
    try:
        end = time.monotonic() + BUSY_RETRY_SECONDS
        while True:
            try:
                answer = client.call({"command": command, "properties": properties})
            except CallError as exc:
                raise RuntimeError(f"the process manager did not answer: {exc}") from None
            if answer.get("status") != "error":  # "status" answers the watcher's status there
                return answer
            reason = answer.get("reason", "unknown error")
            if "already running" not in reason or time.monotonic() > end:
                raise RuntimeError(reason)
            time.sleep(0.1)
    finally:
        client.stop()


def parse_scale(words: list[str], types: list[str]) -> dict[str, int]:
    """Return ``{type: count}`` from ``words`` such as ``["worker=3", "mailer=2"]``.

    Words naming an all-capitals variable (make's own, e.g. PYTHON=…) are skipped. Raise
    ValueError for an unknown type, a count that is not a whole number, or web at other than 1.
    """
    counts: dict[str, int] = {}
    for word in words:
        name, equals, value = word.partition("=")
        if equals and name.isupper():
            continue
        if not equals or name not in types:
            raise ValueError(f"{word!r}: use TYPE=COUNT with a type of the Procfile ({', '.join(types)})")
        if not value.isdigit():
            raise ValueError(f"{word!r}: the count must be a whole number, e.g. {name}=2")
        if name == WEB and int(value) != 1:
            raise ValueError(
                "web runs one process on $PORT; its concurrency is WEB_CONCURRENCY gunicorn workers "
                "(e.g. `WEB_CONCURRENCY=4 make run`)"
            )
        counts[name] = int(value)
    if not counts:
        raise ValueError(f"nothing to scale: e.g. `make scale worker=3 mailer=2` (types: {', '.join(types)})")
    return counts


def scale(counts: dict[str, int]) -> list[str]:
    """Set the number of processes of each type in ``counts``; return one line per type.

    Processes are added at once; a surplus is stopped with SIGTERM in the background, the
    highest-numbered first (a worker finishes its job: warm shutdown). Other types are untouched.
    """
    lines = []
    for name, count in counts.items():
        before = call("numprocesses", name=name)["numprocesses"]
        call("set", name=name, options={"numprocesses": count})
        if count and call("status", name=name)["status"] == "stopped":
            call("start", name=name)
        if count > before:
            how = f"starting {name}.{before + 1}" + (f"…{name}.{count}" if count > before + 1 else "")
        elif count < before:
            how = f"stopping {name}.{count + 1}" + (f"…{name}.{before}" if before > count + 1 else "")
            how += " with SIGTERM (each finishes what it is doing first)"
        else:
            how = "unchanged"
        lines.append(f"formation: {name}: {before} → {count}, {how}")
    return lines


def processes() -> list[dict]:
    """Return one row per process of the running formation, in Procfile order, then by number.

    Each row: ``name`` ("worker.2"), ``pid`` (int, or None for a number waiting for its restart),
    ``state`` ("up", "stopping", or "starting"), ``uptime`` (seconds or None), ``rss`` (bytes of
    the process and its descendants, or None), ``restarts`` (exits of its own since the formation
    started). Raise NotRunning or RuntimeError as call() does.
    """
    rows = call("formation_ps")["processes"]
    order = {name: index for index, name in enumerate(formation_types())}

    def key(row):
        kind, _, number = row["name"].rpartition(".")
        return order.get(kind, len(order)), int(number), row["pid"] or 0

    return sorted(rows, key=key)


def duration(seconds: float | None) -> str:
    """Return ``seconds`` as heroku ps shows an age: 42s, 5m12s, 3h04m, 2d05h; "-" for None."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def ps_table(rows: list[dict]) -> str:
    """Return ``rows`` (processes()) as a table: process, pid, state, uptime, RSS (MiB), restarts."""
    header = ("process", "pid", "state", "uptime", "rss", "restarts")
    lines = [header]
    for row in rows:
        rss = f"{row['rss'] / 1048576:.0f} MiB" if row["rss"] is not None else "-"
        restarts = "-" if row["restarts"] is None else str(row["restarts"])
        lines.append((row["name"], str(row["pid"] or "-"), row["state"], duration(row["uptime"]), rss, restarts))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    cells = ("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(text.rstrip() for text in cells)


def restart(name: str) -> str:
    """Restart the processes of type ``name``; return one line saying how.

    web: SIGHUP to gunicorn, which starts new workers and then stops the old ones gracefully: the
    process, its pid and its listening socket stay, so no request fails. Other types: SIGTERM to
    each process (a worker finishes its job), and each is started again as soon as it exits.
    """
    count = sum(1 for row in processes() if row["name"].rpartition(".")[0] == name and row["pid"])
    if name == WEB:
        call("signal", name=name, signum="HUP")
        how = "gunicorn starts new workers, then stops the old ones gracefully"
        return f"formation: {name}: SIGHUP to {count} process(es): {how}"
    call("signal", name=name, signum=signal.SIGTERM.name)
    how = "each finishes what it is doing, exits and starts again at once"
    return f"formation: {name}: SIGTERM to {count} process(es): {how}"


def logs_command(name: str | None, *, lines: int = 20) -> list[str]:
    """Return the ``tail`` command that follows the log of type ``name`` (every type's when None),
    across rotations, starting with its last ``lines`` lines."""
    names = [name] if name else formation_types()
    return ["tail", "-q", "-n", str(lines), "-F", *(str(LOG_DIR / f"{each}.log") for each in names)]
