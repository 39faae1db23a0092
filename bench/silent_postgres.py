"""How long a query hangs on a PostgreSQL connection that goes silent without being closed.

Usage (root, iproute2): ``python bench/silent_postgres.py before|after [--upstream HOST:PORT]
[--user postgres] [--dbname postgres] [--cap 60]``. The client connects through a link made silent
after its first query (embedded.silent_link: a network namespace and a veth pair whose far end is
set down, so packets are dropped with no reset), then times its second query. "before": libpq's
defaults (kernel keepalive after 7200 s idle); "after": project.env.keepalive_options(15). A query
still hung after ``--cap`` seconds is reported as such. Prints one line; cleans up the namespace,
the veth and the forwarders (by PID) always.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from embedded.silent_link import SilentLink, unavailable_reason
from project.env import keepalive_options


def main() -> int:
    """Run the measurement; return the exit status (2 when a silent link cannot be made here)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["before", "after"])
    parser.add_argument("--upstream", default="127.0.0.1:5432", help="PostgreSQL's host:port")
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--dbname", default="postgres")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds to wait for the hung query")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    host, _, port = args.upstream.rpartition(":")
    extra = keepalive_options(15) if args.mode == "after" else {}
    link = SilentLink((host, int(port)))
    try:
        link.open()
        address, link_port = link.address
        connection = psycopg.connect(
            host=address, port=link_port, user=args.user, dbname=args.dbname, autocommit=True, **extra
        )
        connection.execute("SELECT 1")
        link.freeze()
        outcome: list[str] = []
        started = time.monotonic()

        def query() -> None:
            try:
                connection.execute("SELECT 1")
                outcome.append(f"answered after {time.monotonic() - started:.1f} s")
            except psycopg.Error as exc:
                outcome.append(f"query ended after {time.monotonic() - started:.1f} s: {str(exc).strip()[:80]}")

        thread = threading.Thread(target=query, daemon=True)  # a hung one is left behind at exit
        thread.start()
        thread.join(args.cap)
        print(f"{args.mode}: {outcome[0] if outcome else f'still hung when stopped at {args.cap:g} s'}")
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
