"""The embedded servers keep the port they first got and listen there again while it is free, so
saved ``psql`` and GUI connections keep working; Redis is the same major version as the
deployments pin (docker-compose.yml, the Kubernetes ConfigMap)."""

import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from embedded.polling import wait_until
from embedded.servers import Postgres, Redis, SmtpSink, port_free, port_open, redis_server_binary
from processes.parity import K8S_ANNOTATION, K8S_CONFIGMAP, major

ROOT = Path(__file__).resolve().parent.parent
SERVERS = pytest.mark.parametrize("kind", [Postgres, Redis, SmtpSink], ids=lambda kind: kind.name)


@pytest.fixture
def server_root():
    """A fresh profile folder under .formation/ (the embedded PostgreSQL, run as its own user
    when the tests run as root, can reach it there); removed afterwards."""
    root = ROOT / ".formation" / f"ports-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def start(kind, root: Path):
    server = kind(root, durable=False, **({"echo": False} if kind is SmtpSink else {}))
    server.ensure()
    assert server.started_here and port_open(server.port)
    return server


def stop(server) -> int:
    server.stop()
    wait_until(lambda: port_free(server.port), deadline=10, message=f"{server.name} to free its port")
    return server.port


@SERVERS
def test_a_server_listens_on_its_first_port_again_after_a_restart(kind, server_root):
    first = stop(start(kind, server_root))
    second = start(kind, server_root)
    try:
        assert second.port == first
    finally:
        second.stop()
    assert server_root.joinpath(f"{kind.name}.port").read_text().strip() == str(first)


@SERVERS
def test_a_taken_port_is_replaced_by_a_new_one_that_is_saved(kind, server_root):
    first = stop(start(kind, server_root))
    with socket.socket() as squatter:
        # SO_REUSEADDR, as a server sets it: the stopped server's connections may linger in TIME_WAIT.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        second = start(kind, server_root)
        try:
            assert second.port != first
            assert server_root.joinpath(f"{kind.name}.port").read_text().strip() == str(second.port)
        finally:
            stop(second)
    third = start(kind, server_root)  # the new port is the one kept from now on
    try:
        assert third.port == second.port
    finally:
        third.stop()


def test_embedded_redis_is_the_major_version_the_deployments_pin():
    version = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout
    here = version.split("v=")[1].split()[0]  # "Redis server v=8.2.3 sha=…"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["image"]
    configmap = yaml.safe_load((ROOT / K8S_CONFIGMAP).read_text())
    pinned = configmap["metadata"]["annotations"][K8S_ANNOTATION.format("redis")]
    assert compose == "redis:8.2"
    assert pinned == "8.2"
    assert major(here) == major(pinned) == "8", here
