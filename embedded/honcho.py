"""Run honcho with a shutdown grace period longer than its fixed 5 seconds.

honcho sends SIGTERM to each process group on Ctrl-C, then SIGKILL after
``honcho.manager.KILL_WAIT`` seconds (5, not configurable on its command line). A worker in
the middle of a job needs up to the job timeout to finish, so the grace period here is
``FORMATION_KILL_WAIT`` seconds (default: RQ_JOB_TIMEOUT + 10, i.e. 70).
Usage: ``python -m embedded.honcho start …`` (any honcho arguments).
"""

import os
import sys

import honcho.manager
from honcho.command import main


def grace_period() -> int:
    """Return the kill wait in seconds from FORMATION_KILL_WAIT or RQ_JOB_TIMEOUT (+10)."""
    if os.environ.get("FORMATION_KILL_WAIT"):
        return int(os.environ["FORMATION_KILL_WAIT"])
    return int(os.environ.get("RQ_JOB_TIMEOUT", "60")) + 10


if __name__ == "__main__":
    honcho.manager.KILL_WAIT = grace_period()
    sys.exit(main())
