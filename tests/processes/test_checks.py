"""The twelve-factor checklist as Django system checks: each fires on a bad configuration; the
connection budget asks the real test PostgreSQL."""

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis
from django.core import checks
from django.db import connections

from core.queues import DEFAULT_QUEUE
from processes.budget import parse_formation, server_limits
from processes.checks import (
    backing_service_problems,
    check_debug_off,
    check_procfile,
    connection_budget_problems,
    procfile_problems,
    redis_policy_problems,
)

ROOT = Path(__file__).resolve().parents[2]


def ids(messages) -> set[str]:
    return {message.id for message in messages}


def test_the_real_configuration_passes():
    assert checks.run_checks(tags=["twelvefactor"], include_deployment_checks=True) == []


def problems(settings, *, database=None, queues=None, email_backend=None) -> set[str]:
    return ids(
        backing_service_problems(
            database={**settings.DATABASES["default"], **(database or {})},
            queues=queues or settings.RQ_QUEUES,
            email_backend=email_backend or settings.EMAIL_BACKEND,
        )
    )


def test_database_not_postgresql(settings):
    assert "formation.E001" in problems(settings, database={"ENGINE": "django.db.backends.mysql"})


def test_database_without_connect_timeout(settings):
    assert "formation.E002" in problems(settings, database={"OPTIONS": {}})


def test_redis_without_connect_timeout(settings):
    assert "formation.E010" in problems(settings, queues={DEFAULT_QUEUE: {"URL": "redis://127.0.0.1:6379/0"}})


def test_conn_health_checks_off(settings):
    assert "formation.E003" in problems(settings, database={"CONN_HEALTH_CHECKS": False})


def test_queue_not_on_redis(settings):
    assert "formation.E004" in problems(settings, queues={DEFAULT_QUEUE: {"URL": "amqp://127.0.0.1/"}})


def test_email_not_smtp(settings):
    assert "formation.E005" in problems(settings, email_backend="django.core.mail.backends.console.EmailBackend")


def test_debug_on(settings):
    settings.DEBUG = True
    assert "formation.E006" in ids(check_debug_off())


@pytest.mark.parametrize(
    ("procfile", "expected"),
    [
        ("web: exec gunicorn --bind 0.0.0.0:$PORT project.wsgi\n", "formation.E007"),  # types missing
        (
            "release: exec python manage.py migrate\nweb: exec gunicorn --bind 0.0.0.0:8000 project.wsgi\n"
            "worker: exec python manage.py rqworker\nscheduler: exec python manage.py rqscheduler\n"
            "mailer: exec python manage.py mailer\n",
            "formation.E008",
        ),
        (
            "release: exec python manage.py migrate\n"
            "web: python manage.py migrate && exec gunicorn --bind 0.0.0.0:$PORT project.wsgi\n"
            "worker: exec python manage.py rqworker\nscheduler: exec python manage.py rqscheduler\n"
            "mailer: exec python manage.py mailer\n",
            "formation.E009",
        ),
    ],
    ids=["missing-types", "web-not-on-PORT", "web-migrates"],
)
def test_procfile_checks(tmp_path, procfile, expected):
    path = tmp_path / "Procfile"
    path.write_text(procfile)
    assert expected in ids(procfile_problems(path))


def test_procfile_unreadable(tmp_path):
    assert ids(procfile_problems(tmp_path / "Procfile")) == {"formation.E011"}


def test_procfile_declaring_a_type_twice(tmp_path):
    path = tmp_path / "Procfile"
    path.write_text("web: exec gunicorn --bind 0.0.0.0:$PORT project.wsgi\nweb: exec gunicorn project.wsgi\n")
    assert ids(procfile_problems(path)) == {"formation.E012"}


def test_the_real_procfile_passes():
    assert check_procfile() == []


def production_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="shop.example.com",
        SECURE_COOKIES="1",
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="31536000",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        BEHIND_TLS_PROXY="1",
    )
    env.update(changes)
    return env


def check_deploy(env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_with_production_like_variables_reports_nothing():
    result = check_deploy(production_env())
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_with_debug_on():
    result = check_deploy(production_env(DEBUG="1"))
    assert result.returncode != 0
    assert "formation.E006" in result.stderr


def budget_problems(**changes) -> list:
    """Run the connection budget check on the real test PostgreSQL with the configuration's values, changed."""
    arguments = {
        "formation": parse_formation(""),
        "web_concurrency": 2,
        "pool_size": None,
        "headroom": 5,
        "database": connections["default"].settings_dict,
        **changes,
    }
    return connection_budget_problems(**arguments)


def allowed_connections() -> int:
    with psycopg.connect(os.environ["DATABASE_URL"]) as connection:
        return server_limits(connection).for_formation(5)


def test_the_default_formation_fits_the_connection_budget():
    assert budget_problems() == []


def test_an_oversized_formation_is_a_warning_naming_the_numbers():
    allowed = allowed_connections()
    workers = allowed // 2 + 1
    [warning] = budget_problems(formation=parse_formation(f"worker={workers}"))
    assert warning.id == "formation.W001" and warning.level == checks.WARNING
    peak = 2 + workers * 2 + 1  # web 1 x 2 workers, the work horses, a mailer
    assert f"can hold {peak} PostgreSQL connections" in warning.msg
    assert f"worker {workers} × 2 = {workers * 2}" in warning.msg
    assert f"more than the {allowed} left" in warning.msg and "5 of headroom" in warning.msg


def test_behind_a_pooler_the_budget_counts_the_pool():
    huge = parse_formation("web=50,worker=500")
    assert budget_problems(formation=huge, web_concurrency=8, pool_size=20) == []
    [warning] = budget_problems(formation=huge, web_concurrency=8, pool_size=allowed_connections() + 1)
    assert warning.id == "formation.W001" and "through a pool of" in warning.msg


def test_an_unreachable_postgresql_is_a_warning_that_it_could_not_ask():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    database = {**connections["default"].settings_dict, "HOST": "127.0.0.1", "PORT": port}
    [warning] = budget_problems(database=database, formation=parse_formation("worker=100000"))
    assert warning.id == "formation.W002" and "Could not ask PostgreSQL" in warning.msg


def test_check_deploy_warns_of_a_formation_over_budget():
    result = check_deploy(production_env(FORMATION="worker=100000", WEB_CONCURRENCY="4"))
    assert result.returncode != 0
    assert "formation.W001" in result.stderr and "worker 100000 × 2 = 200000" in result.stderr


def test_check_deploy_refuses_a_malformed_formation():
    result = check_deploy(production_env(FORMATION="wrker=3"))
    assert result.returncode != 0 and "FORMATION is malformed" in result.stderr


@pytest.mark.django_db
def test_behind_a_pooler_a_statement_timeout_other_than_the_configured_one_is_a_deploy_warning(settings):
    from processes.pooled import check_pooled_statement_timeout

    assert check_pooled_statement_timeout() == []  # not pooled: the timeout is a startup option
    settings.DATABASE_POOLED = True
    # This session's timeout is DATABASE_STATEMENT_TIMEOUT (10 s): as a pooled one reading the role's.
    assert check_pooled_statement_timeout() == []
    settings.DATABASE_STATEMENT_TIMEOUT = 2.5
    [warning] = check_pooled_statement_timeout()
    assert warning.id == "formation.W020"
    assert "statement_timeout 10000 ms, not DATABASE_STATEMENT_TIMEOUT (2500 ms)" in warning.msg


def test_check_deploy_names_an_evicting_redis(own_redis):
    redis.Redis.from_url(own_redis.url).config_set("maxmemory-policy", "allkeys-lru")
    result = check_deploy(production_env(REDIS_URL=own_redis.url))
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if "formation.W030" in line]
    assert "maxmemory-policy is allkeys-lru" in line and "noeviction" in line


def test_check_deploy_says_when_redis_cannot_be_asked(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = settings.RQ_QUEUES[DEFAULT_QUEUE]
    settings.RQ_QUEUES = {DEFAULT_QUEUE: {**queue, "URL": f"redis://127.0.0.1:{port}/0?socket_connect_timeout=1"}}
    assert ids(redis_policy_problems()) == {"formation.W031"}
