"""PgBouncer in front of every process type, in docker compose and in Kubernetes.

Every app container's DATABASE_URL goes through the pooler; the release phase and the post-deploy
step (and every other app container, for dbshell and the schema gate) have DATABASE_DIRECT_URL,
PostgreSQL itself. The pooler pools transactions and ignores no startup parameter (the app sends
none it would refuse), and DATABASE_POOL_SIZE, what `check --deploy` counts, is its
default_pool_size × its replicas (docs/connections.md#pool-it).
"""

import configparser
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_INI = ROOT / "deploy" / "compose" / "pgbouncer.ini"
INIT_SCRIPT = ROOT / "deploy" / "compose" / "initdb" / "10-formation-role.sh"
K8S = ROOT / "deploy" / "kubernetes"
APP_IMAGE = "formation"  # every manifest's name of the formation's image (kustomization.yaml sets the build)
ROLE = "formation"


def pgbouncer_ini(path: Path) -> configparser.ConfigParser:
    config = configparser.ConfigParser(inline_comment_prefixes=None)
    config.read_string(path.read_text())
    return config


def databases_line(config: configparser.ConfigParser) -> dict[str, str]:
    """Return the [databases] entry of the app's database as {host, port, dbname}."""
    return dict(pair.split("=", 1) for pair in shlex.split(config["databases"][ROLE]))


def assert_pools_transactions(config: configparser.ConfigParser, where: str) -> None:
    settings = config["pgbouncer"]
    assert settings["pool_mode"] == "transaction", where
    # The app sends no `options` when pooled: a pooler that ignored it would hide a missing timeout.
    assert "options" not in settings.get("ignore_startup_parameters", ""), where
    assert settings["auth_type"] == "scram-sha-256", where
    # A hard cap per replica, whatever users or databases connect through it.
    assert settings["max_db_connections"] == settings["default_pool_size"], where


def assert_direct_and_pooled(env: dict[str, str], *, pooler: tuple[str, int], direct: dict[str, str], where: str):
    pooled, to_postgresql = urlsplit(env["DATABASE_URL"]), urlsplit(env["DATABASE_DIRECT_URL"])
    assert (pooled.hostname, pooled.port) == pooler, where
    assert (to_postgresql.hostname, str(to_postgresql.port), to_postgresql.path.lstrip("/")) == (
        direct["host"],
        direct["port"],
        direct["dbname"],
    ), where
    assert pooled.username == to_postgresql.username == ROLE, f"{where}: the app's own role, never the superuser"
    assert pooled.path == to_postgresql.path, where


# docker compose


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def app_services() -> dict[str, dict]:
    """The compose services built from the formation's image (the ``x-app`` anchor)."""
    return {name: s for name, s in compose()["services"].items() if s.get("build")}


def test_every_compose_service_of_the_app_connects_through_pgbouncer():
    services = compose()["services"]
    config = pgbouncer_ini(COMPOSE_INI)
    listen = int(config["pgbouncer"]["listen_port"])
    direct = databases_line(config)
    assert direct["host"] == "postgres"
    assert {"release", "post-deploy", "web", "worker", "scheduler", "mailer"} <= set(app_services())
    for name, service in app_services().items():
        assert_direct_and_pooled(service["environment"], pooler=("pgbouncer", listen), direct=direct, where=name)
        assert service["depends_on"]["pgbouncer"] == {"condition": "service_healthy"}, name
    for name in ("release", "post-deploy"):  # they migrate on the direct URL
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
    assert services["pgbouncer"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_compose_pgbouncer_pools_transactions_within_the_checked_pool_size():
    config = pgbouncer_ini(COMPOSE_INI)
    assert_pools_transactions(config, "deploy/compose/pgbouncer.ini")
    pgbouncer = compose()["services"]["pgbouncer"]
    assert pgbouncer["volumes"] == ["./deploy/compose/pgbouncer.ini:/etc/pgbouncer/pgbouncer.ini:ro"]
    assert pgbouncer["environment"]["DB_USER"] == ROLE
    assert "healthcheck" in pgbouncer and "ports" not in pgbouncer
    for name, service in app_services().items():
        assert int(service["environment"]["DATABASE_POOL_SIZE"]) == int(config["pgbouncer"]["default_pool_size"]), name


def test_compose_postgresql_creates_the_apps_own_role_and_keeps_the_superuser_for_the_operator():
    postgres = compose()["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] == "postgres"
    assert "POSTGRES_DB" not in postgres["environment"], "the init script creates the database, owned by the role"
    assert "./deploy/compose/initdb:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    script = INIT_SCRIPT.read_text()
    assert INIT_SCRIPT.stat().st_mode & 0o111, "the image runs an executable script, sources any other"
    assert f"CREATE ROLE {ROLE} LOGIN CREATEDB NOSUPERUSER PASSWORD :'password';" in script
    assert f"CREATE DATABASE {ROLE} OWNER {ROLE};" in script
    assert f"GRANT pg_signal_backend, pg_read_all_stats TO {ROLE};" in script
    # The role's password is one variable, given to the init script, PgBouncer and the app's URLs.
    password = "${FORMATION_DB_PASSWORD:-formation}"
    assert postgres["environment"]["FORMATION_DB_PASSWORD"] == password
    assert compose()["services"]["pgbouncer"]["environment"]["DB_PASSWORD"] == password
    for name, service in app_services().items():
        for variable in ("DATABASE_URL", "DATABASE_DIRECT_URL"):
            assert urlsplit(service["environment"][variable]).password == password, (name, variable)
