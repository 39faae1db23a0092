"""The process manager behind ``make run``: circus runs the Procfile's long-running types.

Usage: ``python -m embedded.manager --endpoint URL --pubsub URL --logs DIR [-c worker=3] TYPE…``;
``python -m embedded run`` starts it after the release phase, and ``make scale``, ``make ps`` and
``make restart`` (embedded/control.py) talk to it on ``--endpoint`` with circus's own commands.

circus (a kept process manager) starts each type's Procfile command as ``/bin/sh -c``, in a
session of its own, and changes the number of processes of one type while the others run. Here:

- each process gets ``DYNO=<type>.<n>`` (its database connections are named after it) and, when
  METRICS_PORT is set, a metrics port of its own (metrics_port);
- a process that exits on its own is started again, after a wait that doubles with each quick
  exit in a row (BACKOFF_FIRST up to BACKOFF_MAX seconds), as compose's ``restart:`` and
  Kubernetes do; ``make restart`` (SIGTERM through circus) starts it again at once;
- scaling down stops the highest-numbered processes with SIGTERM (a worker's warm shutdown:
  its job in progress finishes) without holding up anything else; the surplus is killed, with
  everything it started (RQ's work horse too), only after ``grace_period()`` seconds;
- every line of output is stamped and labelled (``12:00:01 worker.2 | …``), echoed to the
  terminal and kept per type in ``DIR/<type>.log``, rotated at LOG_MAX_BYTES;
- SIGTERM, SIGINT or SIGHUP stops every process gracefully (each one SIGTERM, then SIGKILL after
  ``grace_period()`` seconds), and so does the runner's death. The exit status is 0 when every
  process stopped with 0, else the first other one as a shell status (137: killed).

Documented in docs/local-development.md#operate-the-running-shop.
"""

import argparse
import codecs
import contextlib
import logging
import os
import signal
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import circus.controller
import psutil
from circus.arbiter import Arbiter
from circus.commands.base import Command
from circus.exc import ConflictError
from circus.process import Process
from circus.sighandler import SysHandler
from circus.stream import FileStream
from circus.watcher import Watcher
from tornado import gen, ioloop

from processes.procfile import process_commands

ROOT = Path(__file__).resolve().parent.parent
# Seconds before a process that exited on its own is started again: BACKOFF_FIRST after one exit,
# doubling with each further exit that came less than STABLE_AFTER seconds after its start, up to
# BACKOFF_MAX. A crash loop (a backing service down) then costs a start every 30 s, not a busy loop.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
# Bytes of one type's log file before it is rotated, and how many rotated files are kept.
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3
# Seconds between two checks that the runner that started this manager is still there.
PARENT_CHECK_SECONDS = 1.0
# Step between the METRICS_PORT ranges of two process types (foreman's and honcho's rule for PORT).
PORT_STEP = 100


def grace_period() -> float:
    """Return the seconds a process gets to stop after SIGTERM before SIGKILL: FORMATION_KILL_WAIT,
    else RQ_JOB_TIMEOUT + 10 (a worker in the middle of a job needs up to the job's timeout)."""
    if os.environ.get("FORMATION_KILL_WAIT"):
        return float(os.environ["FORMATION_KILL_WAIT"])
    return float(os.environ.get("RQ_JOB_TIMEOUT", "60")) + 10


def exit_status(code: int) -> int:
    """Return a ``Popen.returncode`` as a shell exit status: ``-N`` (ended by signal N) → 128+N."""
    return 128 - code if code < 0 else code


def metrics_port(base: int, type_index: int, index: int) -> int:
    """Return the METRICS_PORT of process ``index`` (1, 2, …) of the ``type_index``-th long-running
    type (0 for the Procfile's first): ``base`` + 100 × ``type_index`` + ``index`` − 1."""
    return base + PORT_STEP * type_index + index - 1


def say(line: str) -> None:
    """Write ``line`` to stdout (the runner's terminal); drop it when stdout is gone (hung up: EIO)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(line)
        sys.stdout.flush()


class TypeLog(FileStream):
    """One process type's output: each line stamped and labelled (``12:00:01 worker.2 | …``),
    appended to the type's log file (rotated by circus's FileStream) and echoed to the terminal.

    circus hands over raw chunks of each process's stdout and stderr; a line split across two
    chunks, or a UTF-8 character, is joined before it is written.
    """

    def __init__(self, filename: Path, width: int, label):
        super().__init__(filename=str(filename), max_bytes=LOG_MAX_BYTES, backup_count=LOG_BACKUPS)
        self.width = width
        self.label = label  # pid → "worker.2"
        self.pending: dict[tuple[int, str], str] = {}
        self.decoders: dict[tuple[int, str], codecs.IncrementalDecoder] = {}

    def __call__(self, data: dict) -> None:
        key = (data["pid"], data["name"])
        decoder = self.decoders.setdefault(key, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        *lines, rest = (self.pending.pop(key, "") + decoder.decode(data["data"])).split("\n")
        if rest:
            self.pending[key] = rest
        for line in lines:
            self.line(self.label(data["pid"]), line)

    def flush_process(self, pid: int, label: str) -> None:
        """Write what is left of ``pid``'s last unfinished line, and forget its buffers."""
        for key in [key for key in self.decoders if key[0] == pid]:
            rest = self.pending.pop(key, "") + self.decoders.pop(key).decode(b"", final=True)
            if rest:
                self.line(label, rest)

    def line(self, label: str, text: str) -> None:
        stamped = f"{datetime.now():%H:%M:%S} {label:<{self.width}} | {text.rstrip(chr(13))}\n"
        with contextlib.suppress(OSError):
            super().__call__({"data": stamped, "pid": 0, "name": "stdout"})
        say(stamped)


def tree_rss(pid: int) -> int | None:
    """Return the resident memory (bytes) of process ``pid`` and its descendants; None when it is gone."""
    try:
        tree = [psutil.Process(pid)]
        tree += tree[0].children(recursive=True)
    except psutil.Error:
        return None
    total = 0
    for process in tree:
        with contextlib.suppress(psutil.Error):  # a child that just ended (a zombie) has none
            total += process.memory_info().rss
    return total


class Processes(Command):
    """\
    List every process of the formation, for ``make ps``
    ====================================================

    {"command": "formation_ps"} answers {"processes": [{"name", "pid", "state", "uptime", "rss",
    "restarts"}, …]} (ProcessType.rows). circus's own ``stats`` fails while a process has a child
    that has just ended (a worker's work horse), which under load is most of the time.
    """

    name = "formation_ps"

    def message(self, *args, **opts):
        return self.make_message()

    def execute(self, arbiter, props):
        return {"processes": [row for watcher in arbiter.watchers for row in watcher.rows()]}


class Dyno(Process):
    """circus's Process with a platform's per-process environment: ``DYNO=<type>.<n>`` (Heroku's
    name for it; its database connections carry it) and its own METRICS_PORT when the type has
    a base port."""

    def spawn(self):
        env = {**self.env, "DYNO": f"{self.name}.{self.wid}"}
        if self.watcher.metrics_base is not None:
            env["METRICS_PORT"] = str(metrics_port(self.watcher.metrics_base, self.watcher.index, self.wid))
        self.env = env
        return super().spawn()


class ProcessType(Watcher):
    """circus's Watcher for one Procfile type, with restarts after a backoff, scale-down of the
    highest-numbered processes in the background, and what ``make ps`` shows (rows).

    ``index`` is the type's position among the long-running types; ``count`` its processes at start.
    """

    def __init__(self, name: str, command: str, *, index: int, count: int, env: dict, log_dir: Path, width: int):
        super().__init__(
            name,
            "/bin/sh",
            args=["-c", command],
            numprocesses=count,
            working_dir=str(ROOT),
            env=env,
            graceful_timeout=grace_period(),
            hooks={
                "after_spawn": (self._spawned, True),
                "after_reap": (self._reaped, True),
                "before_signal": (self._signalling, True),
            },
        )
        self.index = index
        self.metrics_base = int(env["METRICS_PORT"]) if env.get("METRICS_PORT") else None
        # Watcher builds streams from a configuration mapping only; this one needs the labels.
        self.out = TypeLog(log_dir / f"{name}.log", width, self.label)
        self.stdout_stream = self.stderr_stream = self.out
        self.numbers: dict[int, tuple[int, float]] = {}  # pid → (its number, start time), until it ends
        self.stopping_pids: set[int] = set()  # being stopped by this manager
        self.retiring: dict[int, object] = {}  # pid → Future of its stop, after a scale-down
        self.replace_now: set[int] = set()  # asked to restart (make restart): no backoff
        self.restarts: dict[int, int] = defaultdict(int)  # number → exits of its own, restarted
        self.streak: dict[int, int] = defaultdict(int)  # number → quick exits in a row
        self.not_before: dict[int, float] = {}  # number → monotonic time of its next start
        self.exit_codes: list[int] = []  # of the processes stopped with the formation

    @property
    def _process_class(self):
        return Dyno

    def label(self, pid: int) -> str:
        return f"{self.name}.{self.numbers[pid][0] if pid in self.numbers else '?'}"

    def system(self, message: str) -> None:
        self.out.line("system", message)

    # Hooks (circus calls them with keyword arguments; a hook that fails is logged and ignored).

    def _spawned(self, *, pid, **kwargs) -> bool:
        self.numbers[pid] = (self.processes[pid].wid, self.processes[pid].started)
        self.system(f"{self.label(pid)} started (pid={pid})")
        return True

    def _signalling(self, *, pid, signum, **kwargs) -> bool:
        if signum in (signal.SIGTERM, signal.SIGINT) and pid not in self.stopping_pids:
            self.replace_now.add(pid)  # a restart asked through circus (make restart)
        return True

    def _reaped(self, *, process_pid, exit_code, **kwargs) -> None:
        self._ended(process_pid, exit_code)

    # What happens when a process ends.

    def _ended(self, pid: int, code: int | None) -> None:
        """Say how process ``pid`` ended with ``code`` (a returncode), once; plan its restart when
        it exited on its own."""
        if pid not in self.numbers:
            return
        number, started = self.numbers.pop(pid)
        label = f"{self.name}.{number}"
        self.out.flush_process(pid, label)
        if pid in self.stopping_pids or self.is_stopping() or self.is_stopped():
            self.stopping_pids.discard(pid)
            self.system(f"{label} stopped (rc={code})")
            if self.is_stopping():
                self.exit_codes.append(code or 0)
            return
        if pid in self.replace_now:
            self.replace_now.discard(pid)
            self.system(f"{label} exited (rc={code}) after a restart request; starting it again")
            return
        ran = time.time() - started
        self.streak[number] = self.streak[number] + 1 if ran < STABLE_AFTER else 1
        delay = min(BACKOFF_FIRST * 2 ** (self.streak[number] - 1), BACKOFF_MAX)
        self.not_before[number] = time.monotonic() + delay
        self.restarts[number] += 1
        self.system(f"{label} exited (rc={code}) after {ran:.1f}s; starting it again in {delay:g}s")

    def rows(self) -> list[dict]:
        """Return what ``make ps`` shows of each process (and of each number waiting for its
        restart): name, pid, state, uptime (s), rss (bytes of it and its descendants), restarts."""
        rows = []
        for process in self.processes.values():
            rows.append(
                {
                    "name": f"{self.name}.{process.wid}",
                    "pid": process.pid,
                    "state": "stopping" if process.pid in self.stopping_pids else "up",
                    "uptime": time.time() - process.started,
                    "rss": tree_rss(process.pid),
                    "restarts": self.restarts[process.wid],
                }
            )
        taken = {process.wid for process in self.processes.values()}
        for number, when in self.not_before.items():
            if number not in taken and number <= self.numprocesses and when > time.monotonic():
                row = {"name": f"{self.name}.{number}", "pid": None, "state": "starting", "uptime": None}
                rows.append({**row, "rss": None, "restarts": self.restarts[number]})
        return rows

    # circus's process management, overridden.

    @gen.coroutine
    def kill_process(self, process, stop_signal=None, graceful_timeout=None):
        """circus's stop of one process (stop signal, then SIGKILL to it and its descendants after
        the grace period), saying how it ended, then SIGKILL to whatever it started that outlived it.

        circus sends its SIGKILL to the process first and then looks for its children, which are
        no longer its children by then: RQ's work horse, in a session of its own, ran on.
        """
        self.stopping_pids.add(process.pid)
        try:
            started = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            started = []
        removed = yield super().kill_process(process, stop_signal, graceful_timeout)
        for child in started:
            with contextlib.suppress(psutil.Error):  # psutil checks the pid is still that process
                child.kill()
        if removed:
            # A process killed after the grace period may not be reaped yet: its returncode would
            # read None, and the formation's exit would count it as a graceful 0.
            code, deadline = process.returncode(), time.monotonic() + 5
            while code is None and time.monotonic() < deadline:
                yield gen.sleep(0.05)
                code = process.poll()
            self._ended(process.pid, code)
        return removed

    @gen.coroutine
    def kill_processes(self, stop_signal=None, graceful_timeout=None):
        """Stop every process, and wait for those a scale-down is already stopping."""
        yield super().kill_processes(stop_signal, graceful_timeout)
        if self.retiring:
            yield gen.multi(list(self.retiring.values()))

    @gen.coroutine
    def manage_processes(self):
        """Reap the processes that exited, stop the surplus (highest numbers first) in the
        background, and start what is missing once its backoff has passed.

        circus stops a surplus within the command (``decr`` waits for the stop), and while it
        waits it refuses every other command, a stop of the formation included: a warm shutdown
        can take a whole job.
        """
        if self.is_stopped():
            return
        # The arbiter reaped most exits just before (waitpid(-1)); poll() catches the rest.
        for process in list(self.processes.values()):
            if process.pid not in self.retiring and process.poll() is not None:
                self.processes.pop(process.pid)
                self._ended(process.pid, process.returncode())
        serving = sorted((p for p in self.processes.values() if p.pid not in self.retiring), key=lambda p: p.wid)
        for process in serving[self.numprocesses :]:
            self.retiring[process.pid] = self._retire(process)
        if len(serving) < self.numprocesses and not self.is_stopping():
            yield self.spawn_processes()

    @gen.coroutine
    def _retire(self, process):
        try:
            yield self.kill_process(process)
        finally:
            self.processes.pop(process.pid, None)
            self.retiring.pop(process.pid, None)
            # A number scaled away starts afresh when it comes back.
            for record in (self.restarts, self.streak, self.not_before):
                record.pop(process.wid, None)

    @gen.coroutine
    def spawn_processes(self):
        """Start the missing processes, each under the lowest free number; a number whose
        process exited on its own waits for its backoff."""
        taken = {p.wid for p in self.processes.values()}
        missing = self.numprocesses - sum(1 for p in self.processes.values() if p.pid not in self.retiring)
        number = 0
        while missing > 0:
            number += 1
            if number in taken:
                continue
            missing -= 1
            if self.not_before.get(number, 0) > time.monotonic():
                continue
            if self.spawn_process(recovery_wid=number) is False:
                self.system(f"{self.name}.{number} could not be started; {self.name} is stopped")
                yield self._stop()
                return
            yield gen.moment


class Signals(SysHandler):
    """circus's signal handler, except that SIGHUP stops the formation too (circus reloads on it)
    and a stop is retried until circus takes it: a stop arriving while circus runs another
    command would otherwise be refused and lost."""

    received: str | None = None  # the first stop signal's name
    announced = False

    def signal(self, sig, frame=None):
        if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            self.received = self.received or signal.Signals(sig).name
        super().signal(sig, frame)

    def handle_hup(self):
        self.quit()

    def quit(self):
        self.controller.loop.asyncio_loop.call_soon_threadsafe(self._stop)

    def _stop(self):
        if not self.announced:
            self.announced = True
            say(f"{datetime.now():%H:%M:%S} system | {self.received} received: stopping every process gracefully\n")
        if self.controller.arbiter._stopping:  # a stop is under way already
            return
        try:
            self.controller.arbiter.stop()
        except ConflictError:
            self.controller.loop.call_later(0.1, self._stop)


class BusyStopping(logging.Filter):
    """Drop the traceback tornado logs each second while the formation stops: circus's periodic
    check of the processes is refused (ConflictError) until the stop is done, as it should be."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConflictError))


def parse_concurrency(text: str, types: list[str]) -> dict[str, int]:
    """Return ``{type: count}`` for ``types`` from ``text`` ("worker=3,mailer=2"); 1 where unnamed.

    Raise ValueError naming a type the Procfile lacks or a count that is not a whole number ≥ 0.
    """
    counts = dict.fromkeys(types, 1)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in counts:
            raise ValueError(f"no process type {name!r} in the Procfile (types: {', '.join(types)})")
        if not value.isdigit():
            raise ValueError(f"{item!r}: the count must be a whole number, e.g. {name}=2")
        counts[name] = int(value)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded.manager", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="circus control endpoint (ipc:// or tcp://)")
    parser.add_argument("--pubsub", required=True, help="circus events endpoint")
    parser.add_argument("--logs", required=True, type=Path, help="folder of the per-type log files")
    parser.add_argument("--concurrency", "-c", default="", help="processes per type, e.g. worker=3,mailer=2")
    parser.add_argument("types", nargs="+", help="the Procfile types to run, in order")
    args = parser.parse_args(argv)
    commands = process_commands()
    try:
        counts = parse_concurrency(args.concurrency, args.types)
    except ValueError as exc:
        parser.error(str(exc))
    args.logs.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s circus: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("tornado.application").addFilter(BusyStopping())
    width = max(len(name) for name in args.types) + 3
    env = dict(os.environ)
    watchers = [
        ProcessType(name, commands[name], index=index, count=counts[name], env=env, log_dir=args.logs, width=width)
        for index, name in enumerate(args.types)
    ]
    circus.controller.SysHandler = Signals  # the controller installs it for the arbiter below
    arbiter = Arbiter(watchers, args.endpoint, args.pubsub, check_delay=1.0, loop=None)
    parent = os.getppid()

    def runner_gone():
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    ioloop.PeriodicCallback(runner_gone, PARENT_CHECK_SECONDS * 1000).start()
    arbiter.start()
    codes = [code for watcher in watchers for code in watcher.exit_codes if code != 0]
    return exit_status(codes[0]) if codes else 0


if __name__ == "__main__":
    sys.exit(main())
