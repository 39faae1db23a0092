"""Settings come from the environment only; bad values stop start-up with one line naming them."""

import ast
import os
import subprocess
import sys

import pytest
import redis
from django.db import connection

from core.queues import DEFAULT_QUEUE
from tests.support.configuration import GOOD, ROOT, assert_check_fails_with_one_line_naming, manage_check


def test_valid_configuration_passes_check():
    result = manage_check()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:///db.sqlite3"}, "DATABASE_URL"),  # must refuse: PostgreSQL only
        ({"DATABASE_URL": "mysql://root@127.0.0.1/formation"}, "DATABASE_URL"),
        ({"REDIS_URL": None}, "REDIS_URL"),
        ({"REDIS_URL": "memcached://127.0.0.1"}, "REDIS_URL"),
        ({"EMAIL_URL": "console://"}, "EMAIL_URL"),
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DATABASE_CONNECT_TIMEOUT": "soon"}, "DATABASE_CONNECT_TIMEOUT"),
        ({"REDIS_CONNECT_TIMEOUT": "-1"}, "REDIS_CONNECT_TIMEOUT"),
        ({"REDIS_CONNECT_TIMEOUT": "nan"}, "REDIS_CONNECT_TIMEOUT"),
        ({"REDIS_URL": "redis://127.0.0.1:abc/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/notadb"}, "REDIS_URL"),
        # Two passwords: which one counts would be a guess (the line names both variables).
        ({"REDIS_URL": "redis://:secret@127.0.0.1:6/0", "REDIS_PASSWORD": "other"}, "REDIS_PASSWORD"),
        ({"DATABASE_URL": "postgres://"}, "DATABASE_URL"),
        ({"EMAIL_URL": "smtp://:@"}, "EMAIL_URL"),
        ({"ALLOWED_HOSTS": ",,"}, "ALLOWED_HOSTS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "yaml"}, "LOG_FORMAT"),
        ({"MAILER_POLL_INTERVAL": "inf"}, "MAILER_POLL_INTERVAL"),
        ({"MAILER_POLL_INTERVAL": "nan"}, "MAILER_POLL_INTERVAL"),
        ({"WEB_CONCURRENCY": "abc"}, "WEB_CONCURRENCY"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"PORT": "abc"}, "PORT"),
        ({"SITE_URL": "shop.example.com"}, "SITE_URL"),  # no scheme: email links would not be links
        ({"SITE_URL": "ftp://shop.example.com"}, "SITE_URL"),
        ({"ORDER_PAGE_WAIT_SECONDS": "0"}, "ORDER_PAGE_WAIT_SECONDS"),
        ({"PAYMENT_TIMEOUT": "soon"}, "PAYMENT_TIMEOUT"),
    ],
)
def test_bad_configuration_exits_with_one_line_naming_the_variable(changes, variable):
    assert_check_fails_with_one_line_naming(variable, **changes)


def test_secret_key_may_be_missing_in_debug():
    assert manage_check(SECRET_KEY=None, DEBUG="1").returncode == 0


def settings_value(name: str, **changes: str | None) -> str:
    """Return ``repr(settings.<name>)`` as a fresh process loads it with GOOD plus ``changes``
    (in this process pytest-django forces DEBUG off, whatever the settings say)."""
    code = f"import django; django.setup(); from django.conf import settings; print(repr(settings.{name}))"
    env = {key: value for key, value in os.environ.items() if key not in GOOD and key != "DEBUG"}
    env.update(GOOD, DJANGO_SETTINGS_MODULE="project.settings")
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(("debug", "expected"), [(None, "False"), ("0", "False"), ("1", "True")])
def test_debug_is_off_unless_set(debug, expected):
    assert settings_value("DEBUG", DEBUG=debug) == expected


def test_connect_timeouts_and_health_checks_are_set(settings):
    database = settings.DATABASES["default"]
    assert database["OPTIONS"]["connect_timeout"] >= 1
    assert database["CONN_HEALTH_CHECKS"] is True
    assert "socket_connect_timeout=" in settings.RQ_QUEUES[DEFAULT_QUEUE]["URL"]


def test_redis_password_is_the_password_of_a_redis_url_without_one():
    # Characters that a URL would otherwise take for its own: the connection gets them as they are.
    password = "p@ss/w:rd%41+ #?&="
    url = ast.literal_eval(settings_value("REDIS_URL", REDIS_URL="redis://redis:6379/3", REDIS_PASSWORD=password))
    options = redis.ConnectionPool.from_url(url).connection_kwargs
    assert (options["password"], options["host"], options["port"], options["db"]) == (password, "redis", 6379, 3)
    # Unset or empty: the URL as it is, without a password.
    url = ast.literal_eval(settings_value("REDIS_URL", REDIS_URL="redis://redis:6379/3", REDIS_PASSWORD=""))
    assert "password" not in redis.ConnectionPool.from_url(url).connection_kwargs


def test_a_mail_lease_shorter_than_an_smtp_exchange_is_refused():
    result = manage_check(MAILER_LEASE_SECONDS="10", EMAIL_TIMEOUT="10")
    assert result.returncode != 0
    assert "MAILER_LEASE_SECONDS=10 is too short" in result.stderr


@pytest.mark.parametrize("changes", [{"PAYMENT_TIMEOUT": "31"}, {"RQ_JOB_TIMEOUT": "10", "PAYMENT_TIMEOUT": "6"}])
def test_a_payment_timeout_over_half_the_job_limit_is_refused(changes):
    result = manage_check(**changes)
    assert result.returncode != 0
    assert f"PAYMENT_TIMEOUT={changes['PAYMENT_TIMEOUT']} is too long" in result.stderr


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"DATABASE_STATEMENT_TIMEOUT": "soon"}, "DATABASE_STATEMENT_TIMEOUT"),
        ({"DATABASE_STATEMENT_TIMEOUT": "0"}, "DATABASE_STATEMENT_TIMEOUT"),
        # At or past gunicorn's request timeout, the worker would be killed before the 503.
        ({"DATABASE_STATEMENT_TIMEOUT": "30"}, "DATABASE_STATEMENT_TIMEOUT"),
        ({"DATABASE_STATEMENT_TIMEOUT": "5", "WEB_TIMEOUT": "5"}, "DATABASE_STATEMENT_TIMEOUT"),
        ({"MIGRATION_LOCK_TIMEOUT": "-1"}, "MIGRATION_LOCK_TIMEOUT"),
        ({"MIGRATION_LOCK_TIMEOUT": "0"}, "MIGRATION_LOCK_TIMEOUT"),  # 0 would mean: wait forever
        ({"MIGRATION_LOCK_RETRIES": "many"}, "MIGRATION_LOCK_RETRIES"),
        ({"MIGRATION_RETRY_DELAY": "nan"}, "MIGRATION_RETRY_DELAY"),
        ({"RELEASE_LOCK_WAIT": "-5"}, "RELEASE_LOCK_WAIT"),
    ],
)
def test_bad_release_and_timeout_settings_exit_with_one_line_naming_the_variable(changes, variable):
    assert_check_fails_with_one_line_naming(variable, **changes)


@pytest.mark.django_db
def test_database_connections_have_the_statement_timeout_and_no_release_lock_timeout():
    with connection.cursor() as cursor:
        # pytest-django built this database with the release's migrate on this very connection:
        # its session settings must not outlive the command.
        cursor.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        assert cursor.fetchone() == ("10s", "0")


def test_without_a_pooler_the_statement_timeout_is_a_startup_option():
    options = ast.literal_eval(settings_value("DATABASES['default']['OPTIONS']"))
    assert options["options"] == "-c statement_timeout=10000"
    assert settings_value("DATABASE_POOLED") == "False"
    assert sorted(ast.literal_eval(settings_value("DATABASES"))) == ["default", "gateway"]


def test_a_direct_url_that_differs_means_a_pooler_and_no_startup_options():
    pooled = {
        "DATABASE_URL": "postgres://app@pooler:6432/formation",
        "DATABASE_DIRECT_URL": "postgres://app@db/formation",
    }
    assert settings_value("DATABASE_POOLED", **pooled) == "True"
    assert sorted(ast.literal_eval(settings_value("DATABASES", **pooled))) == ["default", "direct", "gateway"]
    database = ast.literal_eval(settings_value("DATABASES['default']", **pooled))
    # PgBouncer refuses the `options` startup parameter; cursors and prepared statements would
    # outlive the transaction that the pooler's server connection is lent for.
    assert "options" not in database["OPTIONS"]
    assert database["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert database["OPTIONS"]["prepare_threshold"] is None
    assert database["HOST"] == "pooler"
    direct = ast.literal_eval(settings_value("DATABASES['direct']", **pooled))
    assert (direct["HOST"], direct["OPTIONS"]["options"]) == ("db", "-c statement_timeout=10000")
    # A job's gateway connection, asked while its order transaction holds a pooled one, comes from
    # outside the pool: from inside, a pool's worth of jobs would wait on each other.
    gateway = ast.literal_eval(settings_value("DATABASES['gateway']", **pooled))
    assert gateway["HOST"] == "db"
    own_pool = {**pooled, "DATABASE_GATEWAY_URL": "postgres://app@pooler:6432/formation_gateway"}
    gateway = ast.literal_eval(settings_value("DATABASES['gateway']", **own_pool))
    assert (gateway["HOST"], gateway["NAME"], "options" in gateway["OPTIONS"]) == ("pooler", "formation_gateway", False)


def test_database_pooled_can_be_said_outright():
    same = {"DATABASE_DIRECT_URL": GOOD["DATABASE_URL"]}
    assert settings_value("DATABASE_POOLED", **same) == "False"
    assert settings_value("DATABASE_POOLED", DATABASE_POOLED="1") == "True"
    assert settings_value(
        "DATABASE_POOLED", DATABASE_DIRECT_URL="postgres://app@db/formation", DATABASE_POOLED="0"
    ) == ("False")


def test_the_instance_is_the_platforms_name_of_the_process():
    options = ast.literal_eval(
        settings_value("DATABASES['default']['OPTIONS']", DYNO="worker.3", PROCESS_TYPE="worker")
    )
    assert options["application_name"].startswith("formation/worker.3/")
