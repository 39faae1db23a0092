#!/bin/bash
# How long a query hangs on a PostgreSQL connection that goes silent without being closed.
# Usage (root, iproute2, socat): bench/silent_postgres.sh before|after [host:port of PostgreSQL]
# A client in a network namespace it creates reaches PostgreSQL through a socat forwarder on the
# host side of a veth pair (10.213.0.1/30 <-> 10.213.0.2/30); after the first query the host-side
# veth goes down, so the client's packets are dropped with no reset (netem is not always built in).
# "before": libpq's defaults (kernel keepalive 7200 s idle); "after": keepalive_options(15).
# Cleans up the namespace, the veth and the processes it started, always.
set -u
MODE=${1:?before or after}; UPSTREAM=${2:-127.0.0.1:5432}
NS=silentpg$$; H=vsp$$; N=vsq$$; DIR=$(mktemp -d); FWD=; CLIENT=
cleanup() {
    [ -n "$CLIENT" ] && kill "$CLIENT" 2>/dev/null
    # socat forks a child per connection: stop those (children of our forwarder) and then it.
    [ -n "$FWD" ] && { pkill -P "$FWD" 2>/dev/null; kill "$FWD" 2>/dev/null; }
    ip link del "$H" 2>/dev/null; ip netns del "$NS" 2>/dev/null; rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
ip netns add "$NS" && ip link add "$H" type veth peer name "$N" && ip link set "$N" netns "$NS" || exit 2
ip addr add 10.213.0.1/30 dev "$H"; ip link set "$H" up
ip netns exec "$NS" ip addr add 10.213.0.2/30 dev "$N"; ip netns exec "$NS" ip link set "$N" up
socat TCP-LISTEN:15432,bind=10.213.0.1,reuseaddr,fork "TCP:$UPSTREAM" & FWD=$!
cat > "$DIR/client.py" <<'PY'
import os, sys, time
import psycopg
from project.env import keepalive_options
mode, folder = sys.argv[1], sys.argv[2]
extra = keepalive_options(15) if mode == "after" else {}
for _ in range(100):
    try:
        c = psycopg.connect(host="10.213.0.1", port=15432, user="postgres", dbname="postgres", autocommit=True, **extra)
        break
    except psycopg.OperationalError:
        time.sleep(0.05)
c.execute("SELECT 1")
open(f"{folder}/ready", "w").close()
while not os.path.exists(f"{folder}/frozen"):
    time.sleep(0.05)
t = time.monotonic()
try:
    c.execute("SELECT 1")
    print(f"{mode}: answered after {time.monotonic() - t:.1f} s")
except psycopg.Error as e:
    print(f"{mode}: query ended after {time.monotonic() - t:.1f} s: {str(e).strip()[:80]}")
PY
ip netns exec "$NS" env PYTHONPATH="$(dirname "$0")/.." "$(dirname "$0")/../.venv/bin/python" "$DIR/client.py" "$MODE" "$DIR" & CLIENT=$!
for _ in $(seq 200); do [ -e "$DIR/ready" ] && break; sleep 0.05; done
ip link set "$H" down; touch "$DIR/frozen"
wait "$CLIENT"; CLIENT=
