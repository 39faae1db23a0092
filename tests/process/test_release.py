"""The release phase: migrations as a one-off process, safe to rerun, loud when it fails, and never
a stall of the shop: a migration waits for a table lock at most MIGRATION_LOCK_TIMEOUT seconds per
attempt (so shop requests queued behind it wait no longer), retries a bounded number of times, and
two releases at once take turns."""

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
from django.db import connection

from embedded.harness import ROOT, formation_database_url, process_env, run_release
from embedded.polling import wait_until
from processes.release import RELEASE_LOCK_KEY
from tests import factories
from tests.support import stages
from tests.support.release_app import RELEASE_SETTINGS, column_count, recorded

pytestmark = [pytest.mark.process, pytest.mark.release, pytest.mark.django_db(transaction=True)]

# The release processes below run with RELEASE_SETTINGS: the project's settings plus
# tests/release_app (tests.support.release_app); the release_env fixture is in tests/fixtures/release.py.
# Seconds a blocker holds orders_order while the shop is asked for an order page.
HOLD = 8
# Seconds a shop request may wait behind a release: about one MIGRATION_LOCK_TIMEOUT (2 s) plus margin.
MOST_A_REQUEST_WAITS = 3


def test_release_is_safe_to_rerun():
    env = process_env()
    for _ in range(2):
        release = run_release(env)
        assert release.returncode == 0, release.stderr
        assert "No migrations to apply" in release.stdout


@pytest.fixture
def scratch_database():
    """An empty database on the test server, dropped afterwards; yields its URL."""
    name = f"release_{uuid.uuid4().hex[:12]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = formation_database_url().rsplit("/", 1)[0] + f"/{name}"
    yield url
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_failing_migration_exits_non_zero_with_the_error(scratch_database):
    with psycopg.connect(scratch_database.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders_product (id integer)")  # in the way of orders.0001_initial
    release = run_release(process_env(DATABASE_URL=scratch_database))
    assert release.returncode != 0
    assert 'relation "orders_product" already exists' in release.stderr


@pytest.fixture
def stages_env():
    """The release's environment with tests.stages_app and its ``refused`` migrations, whose 0003 is
    an unmarked contract migration (tests/stages_app/__init__.py); the app is dropped afterwards."""
    yield process_env(DJANGO_SETTINGS_MODULE="tests.settings_stages", STAGES_APP_MIGRATIONS="refused")
    stages.stages_app_drop(connection)


def test_the_release_refuses_an_unmarked_contract_migration_in_one_line_and_applies_nothing(stages_env):
    release = run_release(stages_env)
    assert release.returncode == 1
    assert release.stderr.splitlines() == [
        "CommandError: release: stages_app.0003_shelf_size: Add field size to shelf (NOT NULL constraint on columns) "
        "is a contract step, which the release still running cannot live with; nothing was applied. Make it an "
        "expand step, or mark its Migration contract = True to run it in the post-deploy step "
        "(docs/releases.md#expand-and-contract)"
    ]
    assert (stages.recorded(connection), stages.shelf_columns(connection)) == (
        [],
        [],
    )  # not even its expand 0001 and 0002


def test_a_new_database_gets_every_migration_contract_ones_too(stages_env, scratch_database):
    # No migration applied yet: no previous release can be running against it.
    release = run_release({**stages_env, "DATABASE_URL": scratch_database})
    assert release.returncode == 0, release.stderr
    with psycopg.connect(scratch_database) as scratch:
        assert (stages.recorded(scratch), stages.shelf_columns(scratch)) == (
            [stages.INITIAL, stages.NOTE, stages.SIZE],
            ["id", "label", "note", "size"],
        )


def test_the_post_deploy_step_exits_1_in_one_line_while_a_process_of_another_release_runs():
    with psycopg.connect(formation_database_url(), application_name="formation/web/OLD") as old:
        pid = old.info.backend_pid
        post_deploy = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--contract", "--noinput"],
            cwd=ROOT,
            env=process_env(RELEASE_VERSION="NEW"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert post_deploy.returncode == 1
    [line] = post_deploy.stderr.splitlines()
    assert line.startswith(f"CommandError: post-deploy: web of release OLD (PostgreSQL session pid {pid} "), line
    assert "release NEW contracts the schema it may use; nothing was applied." in line


def waiting_alter() -> bool:
    """Return whether a session waits for a lock to run the migration's ALTER TABLE."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'ALTER TABLE orders_order ADD COLUMN release_note%%'"
        )
        return cursor.fetchone()[0] > 0


class Blocker:
    """A session of its own holding orders_order in a read transaction, like a report or pg_dump."""

    def __init__(self, name: str):
        self.connection = psycopg.connect(formation_database_url(), application_name=name)
        self.pid = self.connection.info.backend_pid

    def hold(self) -> None:
        """Open the transaction: ACCESS SHARE on orders_order until ``end``."""
        self.connection.execute("SELECT count(*) FROM orders_order")

    def end(self) -> None:
        self.connection.rollback()

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def blocker():
    """A Blocker named ``nightly-report`` (its application_name)."""
    session = Blocker("nightly-report")
    yield session
    session.close()


def get(url: str) -> tuple[int, dict, float]:
    """GET ``url``; return the status, the headers and the seconds it took."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        status, headers = error.code, dict(error.headers)
    return status, headers, time.monotonic() - started


def test_shop_requests_wait_at_most_the_lock_timeout_behind_a_release_blocked_by_a_long_read(
    formation, release_env, blocker
):
    order = factories.order()
    web = formation.start("web")
    page = f"http://127.0.0.1:{web.env['PORT']}/orders/{order.pk}/"
    blocker.hold()
    release = formation.start(
        "release", wait=False, DJANGO_SETTINGS_MODULE=RELEASE_SETTINGS, MIGRATION_RETRY_DELAY="0.5"
    )
    wait_until(waiting_alter, deadline=30, message="the release's ALTER TABLE to wait for its lock")

    # The report ends HOLD seconds from now; meanwhile shoppers keep asking for their order.
    ends = threading.Timer(HOLD, blocker.end)
    ends.start()
    waits = []
    try:
        deadline = time.monotonic() + HOLD - 1
        while time.monotonic() < deadline:
            status, _, seconds = get(page)
            assert status == 200
            waits.append(seconds)
    finally:
        ends.join()
    assert release.wait(deadline=60) == 0, release.output()
    assert (column_count(), recorded()) == (1, 1)
    print(f"order page waits behind the release, seconds: {[round(wait, 2) for wait in waits]}")
    assert max(waits) < MOST_A_REQUEST_WAITS, waits
    # The requests did queue behind the ALTER (else this test proves nothing).
    assert max(waits) > 0.5, waits
    assert release.output().count(f"pid {blocker.pid} ") >= 1, release.output()


def one_error_line_naming(release, *, pid: int, application_name: str) -> str:
    """Assert the release exited 1 with one stderr line naming the session (pid and
    application_name) it waited for; return that line."""
    print(release.stdout, release.stderr, sep="\n")
    assert release.returncode == 1
    lines = release.stderr.strip().splitlines()
    assert len(lines) == 1, release.stderr
    assert f"pid {pid} " in lines[0]
    assert f"application_name '{application_name}'" in lines[0]
    return lines[0]


def test_a_release_blocked_past_its_retries_exits_with_one_line_naming_the_blocker(release_env, blocker):
    blocker.hold()
    env = {
        **release_env,
        "MIGRATION_LOCK_TIMEOUT": "0.5",
        "MIGRATION_LOCK_RETRIES": "2",
        "MIGRATION_RETRY_DELAY": "0.2",
    }
    release = run_release(env, timeout=60)
    line = one_error_line_naming(release, pid=blocker.pid, application_name="nightly-report")
    assert "idle in transaction" in line
    assert "SELECT count(*) FROM orders_order" in line
    # One line per retry on the log stream, each naming the blocker.
    retries = [line for line in release.stdout.splitlines() if "retry" in line]
    assert len(retries) == 2, release.stdout
    assert all(f"pid {blocker.pid} " in line for line in retries)
    # Nothing half-applied: the migration's transaction rolled back.
    assert (column_count(), recorded()) == (0, 0)


def test_two_releases_at_once_migrate_once_and_both_succeed(formation, release_env):
    # The migration holds its transaction open 3 s after the ALTER, so the two overlap whatever
    # their start-up times; a web-sized statement timeout must not cut it short.
    env = {
        "DJANGO_SETTINGS_MODULE": RELEASE_SETTINGS,
        "RELEASE_APP_HOLD_SECONDS": "3",
        "DATABASE_STATEMENT_TIMEOUT": "1",
    }
    first = formation.start("release", wait=False, **env)
    second = formation.start("release", wait=False, **env)
    codes = [first.wait(deadline=60), second.wait(deadline=60)]
    outputs = first.output() + second.output()
    assert codes == [0, 0], outputs
    assert "already exists" not in outputs
    assert outputs.count("Applying release_app.0001_order_release_note... OK") == 1, outputs
    assert outputs.count("No migrations to apply.") == 1, outputs
    assert "waiting up to 300 s for another release to finish" in outputs  # took turns, not luck
    assert (column_count(), recorded()) == (1, 1)


def test_a_release_waiting_too_long_for_another_exits_with_one_line_naming_it(release_env):
    with psycopg.connect(formation_database_url(), application_name="release-in-progress", autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [RELEASE_LOCK_KEY])
        release = run_release({**release_env, "RELEASE_LOCK_WAIT": "1"}, timeout=60)
        pid = other.info.backend_pid
    one_error_line_naming(release, pid=pid, application_name="release-in-progress")
    assert (column_count(), recorded()) == (0, 0)


def test_a_shop_statement_past_the_statement_timeout_answers_503(formation):
    order = factories.order()
    web = formation.start("web", DATABASE_STATEMENT_TIMEOUT="1")
    page = f"http://127.0.0.1:{web.env['PORT']}/orders/{order.pk}/"
    assert get(page)[0] == 200
    # A session that takes the table outright (a manual ALTER, a VACUUM FULL) and keeps it HOLD s.
    locker = psycopg.connect(formation_database_url(), application_name="manual-alter")
    try:
        locker.execute("LOCK TABLE orders_order IN ACCESS EXCLUSIVE MODE")
        ends = threading.Timer(HOLD, locker.rollback)
        ends.start()
        status, headers, seconds = get(page)
        ends.join()
    finally:
        locker.close()
    print(f"order page behind an exclusive lock: {status} after {seconds:.2f} s")
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert seconds < MOST_A_REQUEST_WAITS
