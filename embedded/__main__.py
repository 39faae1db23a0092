"""The embedded runner behind ``make run``, ``make test`` and ``make manage``.

    python -m embedded run [--concurrency web=1,worker=3]   # release phase, then the formation
    python -m embedded test -- COMMAND…                      # COMMAND against the test servers
    python -m embedded exec -- COMMAND…                      # one-off COMMAND against the dev servers

For each of DATABASE_URL, REDIS_URL and EMAIL_URL that is unset, start (or reuse) the
embedded server of the profile and set the variable; variables already set are used as they
are. ``run`` and ``exec`` also write the URLs to ``.env``, where honcho and one-off commands
read them. Servers this runner started are stopped after the command ends.
"""

import argparse
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from embedded.servers import Postgres, Redis, ServerError, SmtpSink

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".formation"
ENV_FILE = ROOT / ".env"
HEALTH_DEADLINE = 120.0


def say(message: str) -> None:
    print(f"formation: {message}", flush=True)


def procfile_processes() -> dict[str, str]:
    """Return the Procfile's process types and commands, in file order (honcho's parser)."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def start_services(profile: str, *, echo_mail: bool) -> tuple[dict[str, str], list]:
    """Start or reuse the servers for each unset URL variable; return (env updates, servers)."""
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
    return env, servers


def prepare(profile: str, *, echo_mail: bool) -> tuple[dict[str, str], list]:
    """Start the profile's servers and return (environment updates, servers started or reused).

    Adds a SECRET_KEY when none is set (the checkout's stored one for ``dev``, a random one for
    ``test``); for ``dev`` writes the updates to .env for honcho and one-off commands.
    """
    env_updates, servers = start_services(profile, echo_mail=echo_mail)
    if not os.environ.get("SECRET_KEY"):
        env_updates["SECRET_KEY"] = dev_secret_key() if profile == "dev" else secrets.token_urlsafe(50)
    if profile == "dev":
        write_env_file(env_updates)
    return env_updates, servers


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
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + HEALTH_DEADLINE
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "health", timeout=1) as response:
                if response.status == 200:
                    elapsed = time.monotonic() - began
                    say(f"the shop is up at {url} (admin: {url}admin/) after {elapsed:.1f}s; Ctrl-C stops it")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    say(f"web did not answer {url}health within {HEALTH_DEADLINE:g}s; see the web lines above")


def command_run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    env_updates, servers = prepare("dev", echo_mail=True)
    env = {**os.environ, **env_updates}
    port = env.get("PORT") or "8000"
    processes = procfile_processes()
    try:
        if "release" in processes:
            say("release phase: " + processes["release"])
            code = run_child(["/bin/sh", "-c", processes["release"]], env)
            if code != 0:
                say(f"release phase failed with exit code {code}; not starting the formation")
                return code
        types = [name for name in processes if name != "release"]
        threading.Thread(target=announce_when_healthy, args=(port, began), daemon=True).start()
        argv = [sys.executable, "-m", "embedded.honcho", "start", "--port", port, *types]
        if args.concurrency:
            argv[4:4] = ["--concurrency", args.concurrency]
        code = run_child(argv, env)
        # honcho exits 130 after Ctrl-C: that is the ordinary way to stop the shop.
        return 0 if code in (130, -signal.SIGINT) else code
    finally:
        stop_services(servers)


def command_exec(args: argparse.Namespace, profile: str) -> int:
    if not args.command:
        sys.exit("formation: no command given (usage: python -m embedded exec -- COMMAND…)")
    env_updates, servers = prepare(profile, echo_mail=False)
    try:
        return run_child(args.command, {**os.environ, **env_updates})
    finally:
        stop_services(servers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="release phase, then every other Procfile process type through honcho")
    run.add_argument(
        "--concurrency",
        "-c",
        default=os.environ.get("CONCURRENCY", ""),
        help="processes per type, e.g. web=1,worker=3 (honcho -c)",
    )
    for name in ("test", "exec"):
        one = sub.add_parser(name, help=f"run COMMAND against the {'test' if name == 'test' else 'dev'} servers")
        one.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    if args.action == "run":
        return command_run(args)
    return command_exec(args, "test" if args.action == "test" else "dev")


if __name__ == "__main__":
    sys.exit(main())
