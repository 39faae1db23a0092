"""Start the Procfile's own commands as processes, against the test database, Redis and SMTP."""

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO
from urllib.parse import quote

import psutil
from django.conf import settings
from django.db import connection

from core.queues import DEFAULT_QUEUE
from embedded.polling import wait_until
from processes.procfile import READY_LINES, wait_for_health
from processes.procfile import process_commands as procfile

ROOT = Path(__file__).resolve().parent.parent

# Fast recovery timings (seconds) for a formation under test, so that recoveries happen within a
# test's deadlines: a stuck order is swept within seconds and an orphaned email lease expires in
# 12 s. The process tests start their processes with them (tests/fixtures/formation.py) and the
# soak starts from them (bench/soak.py). MAILER_LEASE_SECONDS must stay at least 6 × EMAIL_TIMEOUT
# (the mailer checks it at start).
FAST = {
    "ORDER_SWEEP_INTERVAL": "1",
    "ORDER_STUCK_AFTER": "2",
    "MAILER_POLL_INTERVAL": "0.2",
    "MAILER_LEASE_SECONDS": "12",
    "EMAIL_TIMEOUT": "2",
    "MAILER_HEARTBEAT_SECONDS": "1",
    "STARTUP_RETRY_SECONDS": "2",
    "WEB_CONCURRENCY": "1",
    "WEB_GRACEFUL_TIMEOUT": "20",
}


def formation_database_url() -> str:
    """Return a DATABASE_URL for the database the tests run against (pytest-django's test_ one)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    """Return the environment for a process of the formation under test."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=formation_database_url(),
        REDIS_URL=settings.RQ_QUEUES[DEFAULT_QUEUE]["URL"],
        SECRET_KEY=settings.SECRET_KEY,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DEBUG", None)
    env.update(extra)
    return env


def spawn(
    argv: list[str], env: dict[str, str], *, log_prefix: str, cwd: Path = ROOT, **popen_options
) -> tuple[subprocess.Popen, IO]:
    """Start ``argv`` in ``cwd`` (the repository root unless told) in a session of its own (as
    honcho and supervisors do), stdin from /dev/null, stdout and stderr to a log file named
    ``log_prefix``*.log that is kept after the process ends; return the Popen and the open log file."""
    log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)  # noqa: SIM115 - lives as long as the process
    popen = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **popen_options,
    )
    return popen, log


class Process:
    """One process of a Procfile type, started as honcho would (``/bin/sh -c``, its own group), in
    ``cwd``: the repository root, or the checkout of another release (then give its ``command``)."""

    def __init__(self, kind: str, env: dict[str, str], command: str | None = None, cwd: Path = ROOT):
        self.kind = kind
        self.env = env
        self.command = command or procfile()[kind]
        self.popen, self.log = spawn(["/bin/sh", "-c", self.command], env, log_prefix=f"formation-{kind}-", cwd=cwd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for_output(self, text: str, deadline: float = 30, interval: float = 0.05) -> None:
        """Wait until ``text`` appears in the output (polled every ``interval`` seconds); fail with
        the output if the process exits first or ``deadline`` seconds pass."""

        def seen():
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.kind} exited {self.popen.returncode} first:\n{self.output()}")
            return False

        wait_until(seen, deadline=deadline, interval=interval, message=f"{text!r} from {self.kind}")

    def wait_ready(self, deadline: float = 30, interval: float = 0.05) -> None:
        """Wait until the process is ready (web answers /health, the others print their line in
        processes.procfile.READY_LINES), polling every ``interval`` seconds; fail with the output
        when it exits first or ``deadline`` seconds pass."""
        if self.kind != "web":
            self.wait_for_output(READY_LINES[self.kind], deadline=deadline, interval=interval)
        elif not wait_for_health(self.env["PORT"], deadline=deadline, interval=interval, alive=self.alive):
            why = "exited" if not self.alive() else f"did not answer /health within {deadline:g}s"
            raise AssertionError(f"web {why}:\n{self.output()}")

    def alive(self) -> bool:
        """Return True while the process has not exited."""
        return self.popen.poll() is None

    def send_signal(self, sig: int = signal.SIGTERM, group: bool = False) -> None:
        """Send ``sig`` to the process alone (Kubernetes, docker) or its whole group (honcho, Heroku)."""
        if group:
            os.killpg(self.pid, sig)
        else:
            self.popen.send_signal(sig)

    def signal_every_process(self, sig: int = 15) -> None:  # 15: SIGTERM
        """Send ``sig`` to the process and all its descendants, as Heroku's dyno manager and
        systemd's KillMode=control-group do ("all processes in the dyno")."""
        root = psutil.Process(self.pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)

    def wait(self, deadline: float = 30) -> int:
        """Wait for the exit; return the exit code. Fail (after killing it) when it outlives ``deadline``."""
        try:
            return self.popen.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.kind} still running after {deadline:g}s:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL the process, its group and every descendant, and wait until they are gone.

        Descendants too: RQ's work horse runs in a process group of its own, and one left running
        would go on using the test database (its locks once deadlocked the teardown's TRUNCATE).
        """
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants = psutil.Process(self.pid).children(recursive=True)
            if self.popen.poll() is None:
                os.killpg(self.pid, signal.SIGKILL)
            for process in descendants:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(descendants, timeout=10)
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self.log.close()
        os.unlink(self.log.name)


def run_release(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the Procfile's release command to completion (at most ``timeout`` seconds, else
    ``subprocess.TimeoutExpired``); return the finished process."""
    return subprocess.run(
        ["/bin/sh", "-c", procfile()["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
