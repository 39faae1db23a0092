"""Run honcho with a longer shutdown grace period and an exit status that says how it stopped.

Usage: ``python -m embedded.honcho start …`` (any honcho arguments; ``python -m embedded run``
starts it). It waits FORMATION_KILL_WAIT seconds before SIGKILL, kills work horses too, exits 0
after a graceful stop and survives a hung-up terminal. Documented in
docs/local-development.md#stop-the-shop.
"""

import contextlib
import os
import sys

import honcho.command
import honcho.manager
import honcho.printer
import psutil
from honcho.command import main

# honcho.manager.Manager.loop sets these return codes when a signal stops the formation.
SIGNAL_CODES = {entry["rc"] for entry in honcho.manager.SIGNALS.values()}


def grace_period() -> int:
    """Return the kill wait in seconds from FORMATION_KILL_WAIT or RQ_JOB_TIMEOUT (+10).

    honcho sends SIGTERM to each process group on SIGTERM or SIGINT, then SIGKILL after
    ``honcho.manager.KILL_WAIT`` seconds (5, not configurable on its command line): too short for a
    worker in the middle of a job, which needs up to the job timeout to finish.
    """
    if os.environ.get("FORMATION_KILL_WAIT"):
        return int(os.environ["FORMATION_KILL_WAIT"])
    return int(os.environ.get("RQ_JOB_TIMEOUT", "60")) + 10


def exit_status(code: int) -> int:
    """Return a ``Popen.returncode`` as a shell exit status: ``-N`` (ended by signal N) → 128+N."""
    return 128 - code if code < 0 else code


class Manager(honcho.manager.Manager):
    """honcho's Manager whose ``returncode`` is 0 only when every process exited 0, and whose
    kill reaches every descendant of each process still running."""

    _killed = False

    def add_process(self, name, cmd, quiet=False, env=None, cwd=None):
        """honcho's add_process, with ``DYNO`` set to the process's name (``web.1``, ``worker.2``) as
        Heroku sets it: the process names itself so in its database connections' application_name."""
        return super().add_process(name, cmd, quiet=quiet, env={**(env or {}), "DYNO": name}, cwd=cwd)

    def kill(self) -> None:
        """SIGKILL, once, each process still running and all its descendants.

        honcho's own kill (SIGKILL to the process group, repeated every 0.1 s) misses RQ's work horse,
        which runs in a session of its own: a long job kept running past the grace period, and honcho
        with it.
        """
        if self._killed:
            return
        self._killed = True
        for name, entry in self._processes.items():
            if "returncode" in entry:
                continue
            # Descendants first, while they can still be found through their parent.
            try:
                tree = psutil.Process(entry["pid"]).children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            self._system_print(f"sending SIGKILL to {name} (pid {entry['pid']}) and {len(tree)} descendant(s)\n")
            self._procmgr.kill(entry["pid"])
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()

    def loop(self) -> None:
        """Run honcho's loop, then set ``returncode`` to a shell status that says how the formation stopped.

        honcho itself exits 130 or 143 after any stop by signal, graceful or not. Here: 0 when every
        process exited 0 (a graceful stop); otherwise the code of the process that exited first on
        its own (honcho's rule) or, after a stop signal, of the first process that did not exit 0
        (128+N for signal N: 137 means it was killed after the grace period).
        """
        super().loop()
        # loop() returns once every process has stopped, so each has its returncode.
        failed = [p["returncode"] for p in self._processes.values() if p["returncode"] != 0]
        if not failed:
            self.returncode = 0
        elif self.returncode in SIGNAL_CODES or not self.returncode:
            self.returncode = exit_status(failed[0])
        else:
            self.returncode = exit_status(self.returncode)


class Printer(honcho.printer.Printer):
    """honcho's Printer that drops a line it cannot write (terminal hung up, pipe closed).

    After a hang-up every write fails with EIO; honcho would die mid-stop and leave its processes,
    each in a session of its own, running. Dropping the line lets the stop go on.
    """

    def write(self, message) -> None:
        with contextlib.suppress(OSError):
            super().write(message)


if __name__ == "__main__":
    honcho.manager.KILL_WAIT = grace_period()
    # command_start builds its manager and printer from these names.
    honcho.command.Manager = Manager
    honcho.command.Printer = Printer
    sys.exit(main())
