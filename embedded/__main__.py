"""The embedded runner behind ``make run``, ``make test`` and ``make manage``.

    python -m embedded run [--concurrency worker=3]   # release phase, then the formation
    python -m embedded test -- COMMAND…                # COMMAND against the test servers
    python -m embedded exec -- COMMAND…                # one-off COMMAND against the dev servers
    python -m embedded scale worker=3 mailer=2         # change the running formation
    python -m embedded ps | logs [TYPE] | restart TYPE # see it, follow its logs, restart one type

Each of run, test and exec starts (or reuses) an embedded server for every unset DATABASE_URL,
REDIS_URL and EMAIL_URL, and stops the ones it started when the command ends. ``run`` runs the
formation under a process manager (embedded/manager.py), is refused while another ``run`` of this
checkout runs (its pidfile, embedded/control.py), stops gracefully on SIGTERM, SIGINT or SIGHUP
sent to this runner's PID and exits 0 after a graceful stop; ``test`` also starts a PgBouncer in
front of the database and sets PGBOUNCER_URL. Documented in
docs/local-development.md#the-embedded-servers and docs/local-development.md#stop-the-shop.
"""

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from embedded import control
from embedded.manager import exit_status, parse_concurrency
from embedded.servers import PgBouncer, Postgres, Redis, ServerError, SmtpSink
from processes.budget import DEFAULT_HEADROOM, over_budget, parse_formation, server_limits
from processes.procfile import RELEASE, formation_types, process_commands, wait_for_health

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".formation"
ENV_FILE = ROOT / ".env"
HEALTH_DEADLINE = 120.0
# The signals that stop ``run`` gracefully: a supervisor's stop (SIGTERM), Ctrl-C or ``kill -INT``
# (SIGINT), and a closed terminal or a daemon's hang-up (SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def say(message: str) -> None:
    """Print one ``formation:`` line; drop it when stdout is gone (a hung-up terminal: EIO)."""
    with contextlib.suppress(OSError):
        print(f"formation: {message}", flush=True)


def start_services(profile: str, *, echo_mail: bool) -> tuple[dict[str, str], list]:
    """Start or reuse the servers for each unset URL variable; return (env updates, servers).

    The test profile also gets a PgBouncer in front of DATABASE_URL (start_pgbouncer).
    EMBEDDED_URLS lists the variables set to an embedded server (the tests tell them from yours).
    """
    root = STATE / profile
    durable = profile == "dev"
    wanted = [
        ("DATABASE_URL", Postgres(root, durable=durable)),
        ("REDIS_URL", Redis(root, durable=durable)),
        ("EMAIL_URL", SmtpSink(root, durable=durable, echo=echo_mail)),
    ]
    env: dict[str, str] = {}
    servers = []
    for variable, server in wanted:
        if os.environ.get(variable):
            say(f"{variable} is set: using it, no embedded {server.name}")
            continue
        began = time.monotonic()
        try:
            env[variable] = server.ensure()
        except (ServerError, OSError, subprocess.CalledProcessError) as exc:
            stop_services(servers)
            sys.exit(f"formation: could not start the embedded {server.name}: {exc}")
        servers.append(server)
        how = "started" if server.started_here else "reused"
        say(f"{server.name} {how} in {time.monotonic() - began:.1f}s: {variable}={env[variable]}")
    if profile == "test":
        start_pgbouncer(root, env, servers)
    env["EMBEDDED_URLS"] = ",".join(sorted(name for name in env if name.endswith("_URL")))
    return env, servers


def start_pgbouncer(root: Path, env: dict[str, str], servers: list) -> None:
    """Start or reuse a PgBouncer in front of the test database's server; set PGBOUNCER_URL in ``env``.

    For the tests through a pooler (tests/pooling/); DATABASE_URL stays direct for the rest of the
    suite. A PGBOUNCER_URL you set is used as it is. When no PgBouncer can be had, say why in one
    line and set PGBOUNCER_UNAVAILABLE to it instead: those tests skip with that reason.
    """
    if os.environ.get("PGBOUNCER_URL"):
        say("PGBOUNCER_URL is set: using it, no embedded pgbouncer")
        return
    server = PgBouncer(root, durable=False, database_url=env.get("DATABASE_URL") or os.environ["DATABASE_URL"])
    began = time.monotonic()
    try:
        env["PGBOUNCER_URL"] = server.ensure()
    except (ServerError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        reason = f"no PgBouncer for the pooled tests: {str(exc).splitlines()[0]}"
        env["PGBOUNCER_UNAVAILABLE"] = reason
        say(reason)
        return
    servers.append(server)
    how = "started" if server.started_here else "reused"
    say(f"{server.name} {how} in {time.monotonic() - began:.1f}s: PGBOUNCER_URL={env['PGBOUNCER_URL']}")


def prepare(profile: str, *, echo_mail: bool, collect: bool = True) -> tuple[dict[str, str], list]:
    """Start the profile's servers and return (environment updates, servers started or reused).

    With ``collect``, static files are collected first (collect_static): for whatever starts web.

    Adds a SECRET_KEY when none is set (the checkout's stored one for ``dev``, a random one for
    ``test``); for ``dev`` adds SITE_URL, web's address, when none is set (every process of the
    formation links to the shop there, whatever its own PORT), and writes the updates to .env for
    honcho and one-off commands.
    """
    env_updates, servers = start_services(profile, echo_mail=echo_mail)
    if not os.environ.get("SECRET_KEY"):
        env_updates["SECRET_KEY"] = dev_secret_key() if profile == "dev" else secrets.token_urlsafe(50)
    if profile == "dev" and not os.environ.get("SITE_URL"):
        env_updates["SITE_URL"] = f"http://127.0.0.1:{web_port()}"
    if not os.environ.get("STATIC_ROOT"):
        env_updates["STATIC_ROOT"] = str(STATE / profile / "static")
    if profile == "dev":
        write_env_file(env_updates)
    try:
        if collect:
            collect_static(child_env(env_updates))
    except BaseException:
        stop_services(servers)
        raise
    return env_updates, servers


def web_port() -> str:
    """Return the port web serves on: PORT, else 8000."""
    return os.environ.get("PORT") or "8000"


def collect_static(env: dict[str, str]) -> None:
    """Run ``manage.py collectstatic`` into STATIC_ROOT, as the image's build step does.

    With DEBUG off, web serves static files under hashed names from STATIC_ROOT's manifest and
    refuses to start without it; collecting here lets ``make run`` and ``make test`` serve what
    production serves. Unchanged files are skipped, so a second start is quick. Exit with one
    line when it fails.
    """
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        sys.exit(f"formation: collectstatic failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    say(f"static files collected in {time.monotonic() - began:.1f}s: STATIC_ROOT={env['STATIC_ROOT']}")


def stop_services(servers: list) -> None:
    """Stop, in reverse order, the servers this runner started."""
    for server in reversed(servers):
        if server.started_here:
            server.stop()
            say(f"{server.name} stopped")


def dev_secret_key() -> str:
    """Return this checkout's development SECRET_KEY, generated once into .formation/dev/."""
    path = STATE / "dev" / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def write_env_file(env: dict[str, str]) -> None:
    lines = ["# Written by `python -m embedded` for the embedded servers; rewritten on each start."]
    lines += [f"{key}={value}" for key, value in sorted(env.items())]
    ENV_FILE.write_text("\n".join(lines) + "\n")


def child_env(env_updates: dict[str, str]) -> dict[str, str]:
    """Return the environment of the runner's children: ours, ``env_updates``, and on PATH first
    the directory of this interpreter as invoked (``.venv/bin``; symlinks deliberately not
    resolved, since resolving would give the base Python outside the virtual environment), so the
    Procfile's ``python`` is the virtual environment's even when no environment is activated."""
    env = {**os.environ, **env_updates}
    env["PATH"] = os.pathsep.join(filter(None, [os.path.dirname(sys.executable), env.get("PATH", "")]))
    return env


class GracefulStop:
    """Turn the first of SIGTERM, SIGINT or SIGHUP into one SIGTERM to the current child.

    The children this runs are in their own session, so neither a terminal's Ctrl-C nor a
    supervisor's signal to this runner's process group reaches them directly: each stop reaches
    them exactly once, through here. Later signals only say that the stop is under way (the process
    manager kills what is left after its grace period; see embedded/manager.py).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.child: subprocess.Popen | None = None
        self.forwarded = False

    def install(self) -> None:
        """Handle STOP_SIGNALS from now on, whatever this process inherited (SIG_IGN included: a
        background ``make run &`` inherits SIGINT ignored, and still stops on ``kill -INT``)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = signum
            message = f"{name} received: stopping gracefully"
        else:
            message = f"{name} received: already stopping, waiting for the processes to exit"
        # os.write, not print: a handler that prints while the main thread prints raises
        # "reentrant call" in the buffered writer. After a hang-up the terminal is gone (EIO).
        with contextlib.suppress(OSError):
            os.write(sys.stdout.fileno(), f"formation: {message}\n".encode())
        self._forward()

    def _forward(self) -> None:
        if self.child is not None and not self.forwarded and self.child.poll() is None:
            self.forwarded = True
            self.child.send_signal(signal.SIGTERM)

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        """Run ``argv`` in its own session until it exits; return its ``returncode``."""
        self.forwarded = False
        self.child = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            if self.signal is not None:  # arrived while the child was being started
                self._forward()
            return self.child.wait()
        finally:
            self.child = None


def run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` in the foreground; Ctrl-C reaches it (same process group), not this runner."""
    process = subprocess.Popen(argv, env=env, cwd=ROOT)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    forward = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, forward)


def announce_when_healthy(port: str, began: float) -> None:
    """Say where the shop is once web answers /health (at most HEALTH_DEADLINE seconds), or that it did not."""
    url = f"http://127.0.0.1:{port}/"
    if wait_for_health(port, deadline=HEALTH_DEADLINE):
        elapsed = time.monotonic() - began
        say(f"the shop is up at {url} after {elapsed:.1f}s; Ctrl-C stops it; `make ps` lists its processes")
        say(f"the admin is at {url}admin/ (first time: `make manage ARGS=createsuperuser` in another terminal)")
    else:
        say(f"web did not answer {url}health within {HEALTH_DEADLINE:g}s; see the web lines above")


def warn_over_budget(concurrency: str, database_url: str) -> None:
    """Say, naming the numbers, when the formation ``concurrency`` (``worker=3,mailer=2``) can hold more
    connections than the PostgreSQL at ``database_url`` leaves it: the arithmetic of the deploy
    check (processes.budget, docs/connections.md#the-check). Say nothing when it fits, or when a
    variable is malformed (the process that reads it says so in its own words).
    """
    from django.core.exceptions import ImproperlyConfigured

    from project.env import env_int, web_server_settings

    try:
        formation = parse_formation(concurrency)
        web_concurrency = web_server_settings()["workers"]
        headroom = env_int("DATABASE_CONNECTION_HEADROOM", DEFAULT_HEADROOM)
    except (ValueError, ImproperlyConfigured):
        return
    try:
        with psycopg.connect(database_url, connect_timeout=5, application_name="formation/runner") as connection:
            limits = server_limits(connection)
    except psycopg.Error as exc:
        say(f"the connection budget is not checked: PostgreSQL did not answer ({str(exc).strip().splitlines()[0]})")
        return
    message = over_budget(formation, web_concurrency=web_concurrency, pool_size=None, limits=limits, headroom=headroom)
    if message:
        say(f"warning: {message} Expect refused connections at the peak (docs/connections.md).")


def command_run(args: argparse.Namespace) -> int:
    """Run the release phase, then the formation under the process manager; return the exit status.

    0 after a graceful stop (also when the stop came before or during the release phase and the
    release ended by it); otherwise the release's or the manager's status (see embedded/manager.py).
    Exit 1 at once when another runner of this checkout holds the pidfile (embedded/control.py).
    """
    began = time.monotonic()
    port = web_port()
    endpoint, events = control.endpoints()
    pidfile = control.claim(url=f"http://127.0.0.1:{port}/", endpoint=endpoint)
    stop = GracefulStop()
    stop.install()
    env_updates, servers = prepare("dev", echo_mail=True)
    env = child_env(env_updates)
    # Web's Procfile line binds $PORT: the default must reach it too, not only the SITE_URL.
    env["PORT"] = port
    if "DATABASE_URL" in env_updates:  # the embedded server; your own is `manage.py check --deploy`'s
        warn_over_budget(args.concurrency, env_updates.get("DATABASE_DIRECT_URL") or env_updates["DATABASE_URL"])
    # Lines for people at a terminal; production's default is JSON lines (core/logs.py).
    if not env.get("LOG_FORMAT"):
        env["LOG_FORMAT"] = "text"
    processes = process_commands()
    try:
        if RELEASE in processes and stop.signal is None:
            say("release phase: " + processes[RELEASE])
            code = stop.run(["/bin/sh", "-c", processes[RELEASE]], env)
            if stop.signal is not None and code in (0, -signal.SIGTERM):
                say("stopped in the release phase; the formation was not started")
                return 0
            if code != 0:
                say(f"release phase failed with exit code {exit_status(code)}; not starting the formation")
                return exit_status(code)
        if stop.signal is not None:
            say("stopped before the formation was started")
            return 0
        types = [name for name in processes if name != RELEASE]
        threading.Thread(target=announce_when_healthy, args=(port, began), daemon=True).start()
        argv = [sys.executable, "-m", "embedded.manager", "--endpoint", endpoint, "--pubsub", events]
        argv += ["--logs", str(control.LOG_DIR), "--concurrency", args.concurrency, *types]
        code = exit_status(stop.run(argv, env))
        if code != 0:
            say(f"the formation did not stop gracefully: exit code {code} (see the lines above)")
        return code
    finally:
        stop_services(servers)
        control.release(pidfile)


def command_exec(args: argparse.Namespace, profile: str) -> int:
    if not args.command:
        sys.exit("formation: no command given (usage: python -m embedded exec -- COMMAND…)")
    # A one-off (`make manage`, `make parity`) serves no page: no collectstatic for it.
    env_updates, servers = prepare(profile, echo_mail=False, collect=profile == "test")
    try:
        return run_child(args.command, child_env(env_updates))
    finally:
        stop_services(servers)


def command_operate(args: argparse.Namespace) -> int:
    """Run ``scale``, ``ps``, ``logs`` or ``restart`` against the running formation (embedded/control.py)."""
    types = formation_types()
    if args.action == "logs":
        if args.type and args.type not in types:
            sys.exit(f"formation: no process type {args.type!r} (types: {', '.join(types)})")
        argv = control.logs_command(args.type)
        os.execvp(argv[0], argv)
    try:
        if args.action == "scale":
            lines = control.scale(control.parse_scale(args.counts, types))
        elif args.action == "ps":
            lines = [control.ps_table(control.processes())]
        else:
            if args.type not in types:
                sys.exit(f"formation: name a process type to restart: {', '.join(types)} (e.g. `make restart web`)")
            lines = [control.restart(args.type)]
    except (ValueError, RuntimeError, control.NotRunning) as exc:
        sys.exit(f"formation: {exc}")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="release phase, then every other Procfile process type under a process manager")
    run.add_argument(
        "--concurrency",
        "-c",
        default=os.environ.get("CONCURRENCY", ""),
        help="processes per type at start, e.g. worker=3,mailer=2 (1 for each type not named)",
    )
    for name in ("test", "exec"):
        one = sub.add_parser(name, help=f"run COMMAND against the {'test' if name == 'test' else 'dev'} servers")
        one.add_argument("command", nargs=argparse.REMAINDER)
    scale = sub.add_parser("scale", help="set the number of processes of types of the running formation")
    scale.add_argument("counts", nargs="*", metavar="TYPE=COUNT")
    sub.add_parser("ps", help="list the running formation's processes")
    logs = sub.add_parser("logs", help="follow the log of one process type (of every type without TYPE)")
    logs.add_argument("type", nargs="?", metavar="TYPE")
    restart = sub.add_parser("restart", help="restart one process type (web: gunicorn's graceful reload)")
    restart.add_argument("type", nargs="?", metavar="TYPE")
    args = parser.parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    if args.action == "run":
        try:
            parse_concurrency(args.concurrency, formation_types())
        except ValueError as exc:
            parser.error(str(exc))
        return command_run(args)
    if args.action in ("scale", "ps", "logs", "restart"):
        return command_operate(args)
    return command_exec(args, "test" if args.action == "test" else "dev")


if __name__ == "__main__":
    sys.exit(main())
