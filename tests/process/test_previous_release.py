"""The previous release against this one's schema, side by side with this one, as a rollout runs
them: this checkout's release phase has migrated the database (the test database is at this
version's newest migration), and the previous release's own code, taken from git, serves shoppers
and processes orders beside this version's processes on the same PostgreSQL, Redis and SMTP.

Every migration this version adds is an expand step (docs/releases.md#expand-and-contract): new
nullable columns or columns with a database default, concurrent indexes, database-side defaults
for columns the previous release still fills itself. tests/test_migrations.py checks that by the
rule; this module checks it by running the previous release's Procfile lines, unchanged, on the
migrated schema: orders placed through either version's web, paid by either version's worker,
confirmed by either version's mailer, each paid, charged and emailed exactly once.

PREVIOUS_RELEASE is the release running in production before this one's migrations: move it
forward when a release that ships migrations is out everywhere.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from embedded.harness import ROOT, process_env
from embedded.polling import wait_until
from embedded.servers import free_port
from embedded.shopper import ShopperStream
from orders.models import Order
from tests import factories
from tests.process.support import assert_exactly_once
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.release,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

# The release before the migrations mailer/0007-0009 and orders/0008-0009 (git commit).
PREVIOUS_RELEASE = "f651d3b233dde52b2fb27c5838e047f467605311"
# Long-running types of each version started side by side (the scheduler's leader lock is checked
# by tests/process/test_scheduler.py; here each version's maintenance jobs would only add noise).
KINDS = ("web", "worker", "mailer")


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


def procfile_commands(path: Path) -> dict[str, str]:
    """Return the process types of the Procfile at ``path`` and their commands (the previous
    release's own lines, not this version's parser's reading of them)."""
    lines = (line.partition(":") for line in path.read_text().splitlines() if ":" in line and not line.startswith("#"))
    return {name.strip(): command.strip() for name, _, command in lines}


def migration_files(tree: Path) -> set[str]:
    """Return the project's migration files under ``tree`` ("orders/migrations/0008_….py")."""
    return {
        str(path.relative_to(tree))
        for app in ("orders", "mailer")
        for path in (tree / app / "migrations").glob("0*.py")
    }


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """A checkout of PREVIOUS_RELEASE (``git archive``) with its static files collected, as its
    image's build step does; return its directory.

    Fails when the commit is missing from a full clone; skips only in a shallow clone, which holds
    no previous release to run."""
    if git("cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode != 0:
        if git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
            pytest.skip(f"a shallow clone: the previous release {PREVIOUS_RELEASE[:12]} is not in it")
        pytest.fail(f"the previous release {PREVIOUS_RELEASE} is not in this repository")
    directory = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        f"git archive {PREVIOUS_RELEASE} | tar -x -C {directory}", shell=True, cwd=ROOT, capture_output=True, text=True
    )
    assert archive.returncode == 0, archive.stderr
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=directory,
        env=process_env(STATIC_ROOT=str(directory / "staticfiles")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collect.returncode == 0, collect.stderr
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_previous_release_knows_fewer_migrations_than_the_schema_has(previous_release):
    new = migration_files(ROOT) - migration_files(previous_release)
    assert new, "no migration since the previous release: move PREVIOUS_RELEASE forward"
    with connection.cursor() as cursor:
        cursor.execute("SELECT app || '/migrations/' || name || '.py' FROM django_migrations")
        applied = {row[0] for row in cursor.fetchall()}
    assert new <= applied, "the test database is not at this version's newest migration"


def test_the_previous_release_serves_and_processes_orders_beside_this_one(formation, smtp, previous_release):
    factories.product(stock=10_000)
    commands = procfile_commands(previous_release / "Procfile")
    versions = {}
    for version, cwd in (("A", previous_release), ("B", ROOT)):
        port = str(free_port())
        versions[version] = {
            kind: formation.start(
                kind,
                wait=False,
                command=commands[kind] if version == "A" else None,
                cwd=cwd,
                RELEASE_VERSION=version,
                # Each release serves the static files its own build collected.
                **({"STATIC_ROOT": str(cwd / "staticfiles")} if version == "A" else {}),
                PORT=port,
            )
            for kind in KINDS
        }
    for processes in versions.values():
        for process in processes.values():
            process.wait_ready(30)

    streams = {
        version: ShopperStream(f"http://127.0.0.1:{processes['web'].env['PORT']}", shoppers=1, pause=0.1).start()
        for version, processes in versions.items()
    }
    try:
        # Until each web took 12 orders, or one refused a request (its failures are asserted below).
        def placed():
            return all(s.placed() >= 12 for s in streams.values()) or any(s.failures for s in streams.values())

        wait_until(placed, deadline=60, message="12 orders through each version's web")
    finally:
        for stream in streams.values():
            stream.stop()
    for version, stream in streams.items():
        assert stream.failures == [], (version, stream.failures)

    ids = [order_id for stream in streams.values() for order_id in stream.orders]
    orders = list(Order.objects.filter(pk__in=ids))
    assert len(orders) == len(ids) >= 24
    unpaid = Order.objects.filter(pk__in=ids).exclude(status="paid")
    wait_until(lambda: not unpaid.exists(), deadline=60, message="every order of both versions to be paid")
    assert_exactly_once(orders, smtp)

    # Each version's worker and mailer took part, so each read rows the other version wrote.
    for version, processes in versions.items():
        assert "Successfully completed orders.jobs.process_order" in processes["worker"].output(), version
        assert ": sent " in processes["mailer"].output(), version
        for process in processes.values():
            assert process.alive(), f"version {version}'s {process.kind} exited:\n{process.output()}"
            assert "Traceback" not in process.output(), f"version {version}'s {process.kind}:\n{process.output()}"
