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

from processes.budget import parse_formation

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


def pool_total(config: configparser.ConfigParser) -> int:
    """Return the server connections one PgBouncer of ``config`` opens at most: its default pool and
    the sandbox gateway's own pool."""
    gateway = dict(pair.split("=", 1) for pair in shlex.split(config["databases"]["formation_gateway"]))
    return int(config["pgbouncer"]["default_pool_size"]) + int(gateway["max_db_connections"])


def assert_gateway_pool(env: dict[str, str], *, pooler: tuple[str, int], config, where: str) -> None:
    """The sandbox gateway connects through a pool of its own, to the app's database."""
    gateway = urlsplit(env["DATABASE_GATEWAY_URL"])
    assert (gateway.hostname, gateway.port, gateway.path) == (*pooler, "/formation_gateway"), where
    entry = dict(pair.split("=", 1) for pair in shlex.split(config["databases"]["formation_gateway"]))
    assert {key: entry[key] for key in ("host", "port", "dbname")} == databases_line(config), where
    assert entry["pool_size"] == entry["max_db_connections"], where


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
        assert_gateway_pool(service["environment"], pooler=("pgbouncer", listen), config=config, where=name)
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
        assert int(service["environment"]["DATABASE_POOL_SIZE"]) == pool_total(config), name


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


# Kubernetes


def k8s_documents() -> list[dict]:
    config = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = []
    for name in config["resources"]:
        documents += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return documents


def of_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in k8s_documents() if doc["kind"] == kind}


def app_containers() -> list[tuple[str, dict]]:
    """Every container, init containers included, of the formation's image: (workload/container, container)."""
    found = []
    for kind in ("Deployment", "Job"):
        for name, workload in of_kind(kind).items():
            pod = workload["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                if container["image"] == APP_IMAGE:
                    found.append((f"{name}/{container['name']}", container))
    return found


def container_env(container: dict) -> dict[str, str]:
    """The container's environment as far as the manifests say: its ConfigMaps in order, then its
    own ``env`` (Kubernetes' precedence; the Secret is not in the repository)."""
    configmaps = of_kind("ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if ref := source.get("configMapRef"):
            env.update(configmaps[ref["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def pgbouncer_pod() -> dict:
    return of_kind("Deployment")["pgbouncer"]["spec"]["template"]["spec"]


def test_every_kubernetes_container_of_the_app_connects_through_pgbouncer():
    config = pgbouncer_ini(K8S / "pgbouncer.ini")
    [port] = of_kind("Service")["pgbouncer"]["spec"]["ports"]
    assert int(config["pgbouncer"]["listen_port"]) == port["port"]
    direct = databases_line(config)
    containers = app_containers()
    names = {where.split("/")[0] for where, _ in containers}
    assert {"formation-release", "formation-post-deploy", "web", "worker", "scheduler", "mailer"} <= names
    for where, container in containers:
        env = container_env(container)
        assert_direct_and_pooled(env, pooler=("pgbouncer", port["port"]), direct=direct, where=where)
        assert_gateway_pool(env, pooler=("pgbouncer", port["port"]), config=config, where=where)
        assert urlsplit(env["DATABASE_URL"]).password is None, f"{where}: the password comes from PGPASSWORD"


def test_the_release_and_post_deploy_jobs_migrate_on_postgresql_itself():
    jobs = of_kind("Job")
    direct = databases_line(pgbouncer_ini(K8S / "pgbouncer.ini"))
    for name in ("formation-release", "formation-post-deploy"):
        [container] = jobs[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"][:3] == ["python", "manage.py", "migrate"], name
        assert "--database" not in container["command"], f"{name}: migrate runs on the direct alias by default"
        assert urlsplit(container_env(container)["DATABASE_DIRECT_URL"]).hostname == direct["host"], name


def test_kubernetes_pgbouncer_pools_transactions_within_the_checked_pool_size():
    config = pgbouncer_ini(K8S / "pgbouncer.ini")
    assert_pools_transactions(config, "deploy/kubernetes/pgbouncer.ini")
    replicas = of_kind("Deployment")["pgbouncer"]["spec"]["replicas"]
    assert replicas == 2
    for where, container in app_containers():
        pool_size = int(container_env(container)["DATABASE_POOL_SIZE"])
        assert pool_size == pool_total(config) * replicas, where
    generators = yaml.safe_load((K8S / "kustomization.yaml").read_text())["configMapGenerator"]
    [generated] = [g for g in generators if g["name"] == "pgbouncer-config"]
    assert generated == {
        "name": "pgbouncer-config",
        "files": ["pgbouncer.ini"],
        "options": {"labels": {"app.kubernetes.io/name": "formation", "app.kubernetes.io/component": "pgbouncer"}},
    }
    auth_file = config["pgbouncer"]["auth_file"]
    env = {e["name"]: e for e in pgbouncer_pod()["containers"][0]["env"]}
    assert env["AUTH_FILE"]["value"] == auth_file, "the image writes the role's password where PgBouncer reads it"
    assert env["DB_USER"]["value"] == ROLE
    assert env["DB_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "formation-secrets", "key": "PGPASSWORD"}}


def test_kubernetes_pgbouncer_runs_two_replicas_probed_on_its_port():
    pod = pgbouncer_pod()
    [container] = pod["containers"]
    assert container["image"] == compose()["services"]["pgbouncer"]["image"], "one PgBouncer version everywhere"
    assert ":" in container["image"] and not container["image"].endswith(":latest")
    [port] = container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == port["name"], probe
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {mount["mountPath"] for mount in container["volumeMounts"] if not mount.get("readOnly")}
    auth_file = pgbouncer_ini(K8S / "pgbouncer.ini")["pgbouncer"]["auth_file"]
    assert str(Path(auth_file).parent) in writable
    # SIGINT, PgBouncer's safe shutdown, once the endpoint is gone; within the grace period.
    assert "kill -INT 1" in container["lifecycle"]["preStop"]["exec"]["command"][-1]
    assert pod["terminationGracePeriodSeconds"] > 5 + 60  # preStop + a job's longest transaction
    assert of_kind("PodDisruptionBudget")["pgbouncer"]["spec"]["minAvailable"] == 1
    deployment = of_kind("Deployment")["pgbouncer"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    service = of_kind("Service")["pgbouncer"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_kubernetes_formation_checked_is_the_autoscalers_maxima():
    [data] = [doc["data"] for doc in k8s_documents() if doc["metadata"]["name"] == "formation-config"]
    scaled = {name: doc["spec"]["maxReplicaCount"] for name, doc in of_kind("ScaledObject").items()}
    expected = {
        "web": scaled["web"],
        "worker": scaled["worker"],
        "scheduler": of_kind("Deployment")["scheduler"]["spec"]["replicas"],
        "mailer": scaled["mailer"],
    }
    assert parse_formation(data["FORMATION"]) == expected
