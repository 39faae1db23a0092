"""Redis answering writes with an error reply while the worker runs: READONLY (a failover left the
client on a replica) and OOM (maxmemory reached under noeviction). The worker waits them out like an
unreachable Redis, and an order placed during the fault is paid once Redis takes writes again."""

import signal
import socket

import pytest
import redis

from embedded.polling import wait_until
from tests import factories
from tests.process.support import order_status
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.faults, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


def closed_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readonly(connection):
    # As after a failover: the node the client talks to is a replica of a master that is gone.
    connection.execute_command("REPLICAOF", "127.0.0.1", str(closed_port()))
    return lambda: connection.execute_command("REPLICAOF", "NO", "ONE")


def out_of_memory(connection):
    before = connection.config_get("maxmemory")["maxmemory"]
    connection.config_set("maxmemory-policy", "noeviction")
    connection.config_set("maxmemory", "1")
    return lambda: connection.config_set("maxmemory", before)


@pytest.mark.parametrize(("fault", "reply"), [(readonly, "read only replica"), (out_of_memory, "maxmemory")])
def test_error_reply_is_waited_out_and_orders_placed_meanwhile_are_paid(formation, own_redis, fault, reply):
    worker = formation.start("worker")
    formation.start("scheduler")  # its sweep enqueues the order whose enqueue Redis refused
    connection = redis.Redis.from_url(own_redis.url)
    wait_until(lambda: connection.smembers("rq:workers"), deadline=30, message="the worker to register")
    end_fault = fault(connection)
    try:
        order = factories.order(email="fault@example.com")
        wait_until(lambda: reply in worker.output(), deadline=15, message=f"the worker to meet {reply}")
        # Past the first refusal and a retry: the worker must still be there.
        wait_until(lambda: worker.output().count(reply) >= 2, deadline=15, message="the worker to retry")
        assert worker.popen.poll() is None, worker.output()
        assert "unhandled exception" not in worker.output()
        assert order_status(order) == "pending"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker output ---\n{worker.output()}") from None
    finally:
        end_fault()
    try:
        wait_until(lambda: order_status(order) == "paid", deadline=60, message="the order placed during the fault")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- worker output ---\n{worker.output()}") from None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(deadline=30) == 0
