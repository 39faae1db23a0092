"""`make run` under a supervisor or in the background: the runner (``python -m embedded run``)
stops the whole formation gracefully on SIGTERM, SIGINT or SIGHUP sent to its PID, whether or not
it has a terminal and even when it inherited SIGINT ignored (``make run &`` from a script), and
exits 0 after a graceful stop. Its children find the virtual environment's ``python`` without an
activated environment."""

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
from pathlib import Path

import psutil
import pytest

from embedded.polling import wait_until
from embedded.servers import port_free
from orders.models import SandboxCharge
from processes.procfile import formation_types, web_healthy
from tests import factories
from tests.process.support import STOP_WITHIN, UP_WITHIN, Launched, stop_and_check
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.shutdown,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

ROOT = Path(__file__).resolve().parents[2]
PROCESS_TYPES = formation_types()


@pytest.fixture
def runner_env(formation_env):
    """The formation's test environment for the runner: the test's own PostgreSQL, Redis and SMTP
    (so it starts no embedded server), a free PORT, a short grace period. The runner rewrites
    .env on start; the checkout's own is put back afterwards."""
    env_file = ROOT / ".env"
    saved = env_file.read_bytes() if env_file.exists() else None
    yield {**formation_env, "FORMATION_KILL_WAIT": "20"}
    if saved is None:
        env_file.unlink(missing_ok=True)
    else:
        env_file.write_bytes(saved)


@pytest.fixture
def launch():
    started: list[Launched] = []

    def start(argv: list[str], env: dict[str, str]) -> Launched:
        started.append(Launched(argv, env))
        return started[-1]

    yield start
    for launched in started:
        launched.close()
        os.unlink(launched.log.name)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_make_run_in_the_background_stops_gracefully_on_a_signal_to_the_runner(runner_env, launch, sig):
    # A fresh make, as from a shell: not a sub-make of `make test` (its MAKEFLAGS, MAKELEVEL).
    env = {key: value for key, value in runner_env.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    make = launch(["make", "run"], env)
    make.wait_until_up()
    code = stop_and_check(make, sig)
    output = make.output()
    assert code == 0, output
    # make's error line, e.g. "make: *** [Makefile:12: run] Error 143"
    assert not re.search(r"^make(\[\d+\])?: \*\*\*", output, re.MULTILINE), output
    for kind in PROCESS_TYPES:
        assert f"{kind}.1 stopped (rc=0)" in output


def test_make_run_without_a_port_serves_on_8000(runner_env, launch):
    if not port_free(8000):
        pytest.skip("port 8000 is taken on this machine")
    env = {key: value for key, value in runner_env.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PORT")}
    make = launch(["make", "run"], {**env, "PORT": ""})
    make.env["PORT"] = "8000"  # where wait_until_up asks
    make.wait_until_up()
    assert stop_and_check(make, signal.SIGTERM) == 0, make.output()


def test_runner_without_an_activated_environment_runs_the_release_with_the_venv_python(runner_env, launch):
    # As a supervisor starts it: the runner's interpreter by its path, a PATH with no venv on it.
    env = {**runner_env, "PATH": "/usr/bin:/bin"}
    env.pop("VIRTUAL_ENV", None)
    runner = launch([sys.executable, "-m", "embedded", "run"], env)
    runner.wait_until_up()
    output = runner.output()
    assert "release phase failed" not in output
    assert "No migrations to apply." in output or "Applying " in output, output
    # Readable lines for the terminal (LOG_FORMAT unset: make run's default is text), e.g.
    # "09:19:10 mailer.1    | 2026-11-30 09:19:10,145 INFO mailer 15245 mailer: started, …".
    started = re.compile(r"mailer\.1 +\| \d{4}-\d\d-\d\d [\d:,]+ INFO mailer \d+ mailer: started")
    wait_until(lambda: started.search(runner.output()), deadline=30, message="the mailer's text line")
    assert stop_and_check(runner, signal.SIGTERM) == 0, runner.output()


def test_runner_exits_non_zero_when_a_process_had_to_be_killed(runner_env, launch):
    # A 30 s job outlasts a 2 s grace period: the process manager kills the worker, and the exit says so.
    env = {**runner_env, "PAYMENT_SANDBOX_LATENCY_MS": "30000", "FORMATION_KILL_WAIT": "2"}
    runner = launch([sys.executable, "-m", "embedded", "run"], env)
    runner.wait_until_up()
    factories.order()
    wait_until(lambda: SandboxCharge.objects.exists(), deadline=20, message="the worker to charge the order")
    assert stop_and_check(runner, signal.SIGTERM) == 128 + signal.SIGKILL, runner.output()
    output = runner.output()
    assert "worker.1 stopped (rc=-9)" in output
    assert "did not stop gracefully: exit code 137" in output


@pytest.mark.parametrize("how", ["ctrl-c", "hang-up"])
def test_the_runners_terminal_stops_the_formation_gracefully(runner_env, how):
    """Ctrl-C in the terminal sends SIGINT to its foreground process group: the runner, which
    passes one SIGTERM to the process manager. A terminal that goes away (a closed window, a dropped ssh
    session) hangs up: the kernel sends SIGHUP to the runner, and every later write to the
    terminal fails with EIO."""
    master, slave = pty.openpty()

    def take_the_terminal():  # in its new session, as a login shell's job has it
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    runner = subprocess.Popen(
        [sys.executable, "-m", "embedded", "run"],
        cwd=ROOT,
        env=runner_env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(slave)
    output = bytearray()
    formation: list[psutil.Process] = []
    try:

        def drain():
            # Here, not in a thread: a read in progress would keep the terminal open.
            while select.select([master], [], [], 0)[0]:
                try:
                    output.extend(os.read(master, 65536))
                except OSError:  # EIO: every process has closed the terminal
                    return

        def up():
            drain()
            if runner.poll() is not None:
                raise AssertionError(f"exited {runner.returncode} first:\n{output.decode(errors='replace')}")
            return web_healthy(runner_env["PORT"]) and all(
                f"{kind}.1 started".encode() in output for kind in PROCESS_TYPES
            )

        wait_until(up, deadline=UP_WITHIN, interval=0.2, message="web /health and every process type")
        root = psutil.Process(runner.pid)
        formation += [root, *root.children(recursive=True)]
        if how == "ctrl-c":
            os.write(master, termios.tcgetattr(master)[6][termios.VINTR])  # the terminal's Ctrl-C
            wait_until(lambda: drain() or runner.poll() is not None, deadline=STOP_WITHIN, message="the runner to exit")
            text = output.decode(errors="replace")
            assert text.count("SIGINT received: stopping gracefully") == 1, text
            assert len(re.findall(r"\| SIG[A-Z]+ received", text)) == 1, text  # the manager: once, from the runner
        else:
            os.close(master)
            master = None
        assert runner.wait(timeout=STOP_WITHIN) == 0, output.decode(errors="replace")
        _, alive = psutil.wait_procs(formation, timeout=10)
        assert not alive, f"still running: {alive}"
    finally:
        if master is not None:
            os.close(master)
        leftovers = []
        with contextlib.suppress(psutil.NoSuchProcess):
            leftovers = psutil.Process(runner.pid).children(recursive=True)
        for process in [*leftovers, *formation]:  # by PID; psutil checks it is still that process
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        runner.wait(timeout=10)
