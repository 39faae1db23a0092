"""Fixtures for process-level tests: the formation's processes, a Redis server a test may restart."""

import signal
import subprocess
from pathlib import Path

import pytest

from core.queues import DEFAULT_QUEUE
from embedded.harness import Process, process_env
from embedded.servers import free_port, port_open, redis_server_command
from tests.support.polling import wait_until

# Fast timings so recoveries happen within a test's deadlines (seconds).
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


class Formation:
    """Starts processes of the Procfile's types with one shared environment; stops them all at the end."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.processes: list[Process] = []

    def start(self, kind: str, *, wait: bool = True, command: str | None = None, **env: str) -> Process:
        """Start one process of ``kind``; with ``wait``, return once it is ready (Process.wait_ready)."""
        process = Process(kind, {**self.env, **env}, command=command)
        self.processes.append(process)
        if wait:
            process.wait_ready(15)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.close()


@pytest.fixture
def formation_env(smtp):
    """The environment of the processes under test: test database, Redis, SMTP, fast timings."""
    return process_env(EMAIL_URL=smtp.url, PORT=str(free_port()), **FAST)


@pytest.fixture
def formation(formation_env):
    running = Formation(formation_env)
    yield running
    running.close()


class RedisServer:
    """A real redis-server (the embedded one, see embedded.servers) that a test may stop and restart."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?socket_connect_timeout=1"

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_server_command(self.port, self.directory, appendonly=True),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        wait_until(lambda: port_open(self.port), deadline=10, message="redis-server to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path, settings, formation_env):
    """A Redis server of this test's own (so it can be restarted), used by the test and its processes."""
    server = RedisServer(tmp_path)
    server.start()
    settings.RQ_QUEUES = {DEFAULT_QUEUE: {**settings.RQ_QUEUES[DEFAULT_QUEUE], "URL": server.url}}
    formation_env["REDIS_URL"] = server.url
    yield server
    server.stop()
