"""Run honcho with a longer shutdown grace period and an exit status that says how it stopped.

honcho sends SIGTERM to each process group on SIGTERM or SIGINT, then SIGKILL after
``honcho.manager.KILL_WAIT`` seconds (5, not configurable on its command line). A worker in
the middle of a job needs up to the job timeout to finish, so the grace period here is
``FORMATION_KILL_WAIT`` seconds (default: RQ_JOB_TIMEOUT + 10, i.e. 70).

honcho itself exits 130 or 143 after any stop by signal, graceful or not. Here the exit status
is 0 when every process exited 0 (a graceful stop); otherwise the code of the process that
exited first on its own (honcho's rule) or, after a stop signal, of the first process that did
not exit 0, as a shell status (128+N for signal N: 137 means it was killed after the grace period).
The kill after the grace period reaches every descendant of a process, once: honcho's own kill
(SIGKILL to the process group, repeated every 0.1 s) misses RQ's work horse, which runs in a
session of its own, so a long job kept running past the grace period and honcho with it.
Its output goes on after the terminal is gone (a hang-up makes every write fail with EIO): the
lines are dropped and the stop goes on, instead of honcho dying mid-stop and leaving its
processes, each in its own session, running.
Usage: ``python -m embedded.honcho start …`` (any honcho arguments).
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
    """Return the kill wait in seconds from FORMATION_KILL_WAIT or RQ_JOB_TIMEOUT (+10)."""
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

    def kill(self) -> None:
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
    """honcho's Printer that drops a line it cannot write (terminal hung up, pipe closed)."""

    def write(self, message) -> None:
        with contextlib.suppress(OSError):
            super().write(message)


if __name__ == "__main__":
    honcho.manager.KILL_WAIT = grace_period()
    # command_start builds its manager and printer from these names.
    honcho.command.Manager = Manager
    honcho.command.Printer = Printer
    sys.exit(main())
