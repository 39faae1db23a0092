"""processes/stages.py against the test database: which real Django operations are contract steps,
how a step says so, which planned migrations wait for the post-deploy step, and which processes of
another release are still alive (PostgreSQL sessions, RQ workers)."""

import psycopg
import pytest
import rq
from django.db import connection, migrations, models
from django.db.migrations.graph import MigrationGraph
from django.db.migrations.loader import MigrationLoader

from core.queues import redis_connection
from embedded.harness import formation_database_url
from processes.management.commands.migrate import ContractCannotWait, StagedExecutor
from processes.stages import (
    APPLIED_EVERYWHERE,
    DROP_REQUIRED_DEFAULT,
    RENAME_CANNOT_WAIT,
    REQUIRED_DROP_CANNOT_WAIT,
    ContractStep,
    contract_steps,
    deferred,
    other_releases,
    steps_that_cannot_wait,
)
from processes.worker import worker_name

# A throwaway app: its one model exists only in the state of the migrations below.
APP = "stages"


def migration(name: str, *operations, app_label: str = APP, dependencies=(), contract: bool = False):
    """Return the Migration ``app_label.name`` with ``operations``, as its module's class would make it."""
    attributes = {"operations": list(operations), "dependencies": list(dependencies)}
    if contract:
        attributes["contract"] = True
    return type("Migration", (migrations.Migration,), attributes)(name, app_label)


def loader_of(*nodes) -> MigrationLoader:
    """Return a MigrationLoader whose graph is the migrations ``nodes``, nothing read from disk or a database."""
    loader = MigrationLoader(None, load=False)
    loader.graph, loader.unmigrated_apps = MigrationGraph(), set()
    for node in nodes:
        loader.graph.add_node((node.app_label, node.name), node)
    for node in nodes:
        for parent in node.dependencies:
            loader.graph.add_dependency(node, (node.app_label, node.name), parent)
    loader.graph.validate_consistency()
    return loader


INITIAL = migration(
    "0001_initial",
    migrations.CreateModel(
        "Shelf",
        [
            ("id", models.BigAutoField(primary_key=True)),
            ("label", models.CharField(max_length=20)),
            ("note", models.CharField(max_length=20, null=True)),
        ],
    ),
)


def steps_of(*operations) -> list[ContractStep]:
    """Return the contract steps of a migration ``0002_case`` of ``operations`` that follows INITIAL."""
    case = migration("0002_case", *operations, dependencies=[(APP, "0001_initial")])
    return contract_steps(migration=case, loader=loader_of(INITIAL, case), connection=connection)


def drop_every_label(apps, schema_editor):
    schema_editor.execute("ALTER TABLE stages_shelf DROP COLUMN label")


EXPAND = {
    "CreateModel": migrations.CreateModel(
        "Rack", [("id", models.BigAutoField(primary_key=True)), ("name", models.CharField(max_length=20))]
    ),
    "AddField null=True": migrations.AddField("shelf", "colour", models.CharField(max_length=20, null=True)),
    "AddField db_default": migrations.AddField("shelf", "colour", models.CharField(max_length=20, db_default="oak")),
    # CREATE INDEX blocks writes while it builds, which the linter only warns about (a warning is no
    # contract step): the previous version runs correctly against the table once it is built.
    "AddIndex": migrations.AddIndex("shelf", models.Index(fields=["label"], name="stages_shelf_label_idx")),
    # Not SQL that can be collected: never analysed, whatever it does.
    "RunPython": migrations.RunPython(drop_every_label),
}


@pytest.mark.django_db
@pytest.mark.parametrize("operation", EXPAND.values(), ids=EXPAND.keys())
def test_expand_operations_are_no_contract_steps(operation):
    assert steps_of(operation) == []


NOT_NULL = "NOT NULL constraint on columns"
CONTRACT = {
    # As makemigrations writes a required column: the default fills the rows, then is dropped.
    "AddField NOT NULL, one-off default": (
        migrations.AddField("shelf", "size", models.PositiveIntegerField(default=1), preserve_default=False),
        [(NOT_NULL, "")],
    ),
    "RemoveField": (migrations.RemoveField("shelf", "note"), [("DROPPING columns", "stages_shelf.note")]),
    "RenameField": (migrations.RenameField("shelf", "label", "title"), [("RENAMING columns", "stages_shelf.label")]),
    "RenameModel": (migrations.RenameModel("Shelf", "Rack"), [("RENAMING tables", "stages_shelf")]),
    "DeleteModel": (migrations.DeleteModel("Shelf"), [("DROPPING table", "stages_shelf")]),
    "AlterField, type": (
        migrations.AlterField("shelf", "label", models.TextField()),
        [("ALTERING columns (Could be backward compatible. You may ignore this migration.)", "stages_shelf.label")],
    ),
    "AlterField, NOT NULL": (migrations.AlterField("shelf", "note", models.CharField(max_length=20)), [(NOT_NULL, "")]),
    "RunSQL": (
        migrations.RunSQL('ALTER TABLE "stages_shelf" DROP COLUMN "note"'),
        [("DROPPING columns", "stages_shelf.note")],
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize(("operation", "problems"), CONTRACT.values(), ids=CONTRACT.keys())
def test_contract_operations_are_contract_steps_naming_the_problem(operation, problems):
    steps = steps_of(operation)
    assert [(step.problem, step.where) for step in steps] == problems
    assert {(step.app_label, step.migration, step.operation) for step in steps} == {
        (APP, "0002_case", operation.describe())
    }


@pytest.mark.django_db
def test_dropping_the_database_default_of_a_not_null_column_is_a_contract_step():
    # The previous version's INSERTs leave the column out and rely on its default; the linter lets
    # ALTER COLUMN … DROP DEFAULT pass, so processes.stages checks it itself.
    add = migrations.AddField("shelf", "grain", models.CharField(max_length=20, db_default="oak"))
    drop = migrations.AlterField("shelf", "grain", models.CharField(max_length=20))
    assert [(step.operation, step.problem) for step in steps_of(add, drop)] == [
        (drop.describe(), DROP_REQUIRED_DEFAULT)
    ]


@pytest.mark.django_db
def test_dropping_the_database_default_of_a_nullable_column_is_no_contract_step():
    add = migrations.AddField("shelf", "grain", models.CharField(max_length=20, null=True, db_default="oak"))
    drop = migrations.AlterField("shelf", "grain", models.CharField(max_length=20, null=True))
    assert steps_of(add, drop) == []


@pytest.mark.django_db
def test_each_operation_is_analysed_from_the_state_the_ones_before_it_leave():
    steps = steps_of(
        migrations.AddField("shelf", "colour", models.CharField(max_length=20, null=True)),
        migrations.RenameField("shelf", "label", "title"),
        migrations.AlterField("shelf", "title", models.TextField()),  # only there once the rename is
    )
    assert [(step.operation, step.where) for step in steps] == [
        ("Rename field label on shelf to title", "stages_shelf.label"),
        ("Alter field title on shelf", "stages_shelf.title"),
    ]


@pytest.mark.django_db
def test_a_contract_step_describes_itself_in_one_line():
    [step] = steps_of(migrations.RemoveField("shelf", "note"))
    assert step.describe() == "stages.0002_case: Remove field note from shelf (DROPPING columns on stages_shelf.note)"
    [step] = steps_of(migrations.AlterField("shelf", "note", models.CharField(max_length=20)))
    assert step.describe() == "stages.0002_case: Alter field note on shelf (NOT NULL constraint on columns)"


@pytest.mark.django_db
def test_the_shipped_migrations_applied_everywhere_are_not_reported():
    assert {
        ("mailer", "0004_outbox_unsettled_attempts_gave_up"),
        ("orders", "0005_product_stock"),
        ("orders", "0006_orderstatuschange_actor"),
    } == APPLIED_EVERYWHERE
    loader = MigrationLoader(None, ignore_no_migrations=True)
    # That each has a contract step without its acknowledgement: tests/test_migrations.py.
    for key in sorted(APPLIED_EVERYWHERE):
        assert contract_steps(migration=loader.graph.nodes[key], loader=loader, connection=connection) == [], key


def test_marked_contract_migrations_and_what_depends_on_them_wait_for_the_post_deploy_step():
    shelf = migration("0001_initial")
    size = migration("0002_size", dependencies=[(APP, "0001_initial")], contract=True)
    after = migration("0003_after", dependencies=[(APP, "0002_size")])
    # Another app's migration that depends on one waiting, through 0003: it waits too.
    dependent = migration("0001_dependent", app_label="other", dependencies=[(APP, "0003_after")])
    unrelated = migration("0001_unrelated", app_label="unrelated")
    # A contract migration applied before (by an earlier post-deploy step) holds nothing back.
    old = migration("0001_old", app_label="old", contract=True)
    after_old = migration("0002_after_old", app_label="old", dependencies=[("old", "0001_old")])
    graph = loader_of(shelf, size, after, dependent, unrelated, old, after_old).graph
    applied = [(APP, "0001_initial"), ("old", "0001_old")]
    # As Django plans from a clean start (the plan migrate renders its states from): applied ones too.
    plan = [(node, False) for node in (shelf, size, unrelated, after, old, after_old, dependent)]

    assert deferred(plan, graph, applied) == {(APP, "0002_size"), (APP, "0003_after"), ("other", "0001_dependent")}
    # Unapplying one is no post-deploy step.
    assert deferred([(size, True)], graph, applied) == set()


@pytest.fixture
def sessions():
    """Return ``open(application_name)``: a PostgreSQL session on the test database with that
    name, as a process of the formation keeps one; all are closed afterwards."""
    opened = []

    def open_session(application_name: str) -> psycopg.Connection:
        opened.append(psycopg.connect(formation_database_url(), application_name=application_name))
        return opened[-1]

    yield open_session
    for session in opened:
        session.close()


@pytest.fixture
def workers():
    """Return ``register(name)``: an RQ worker of that name registered in Redis as a running worker
    does (its birth); all are deregistered afterwards."""
    registered = []

    def register(name: str) -> rq.Worker:
        registered.append(rq.Worker(["default"], name=name, connection=redis_connection()))
        registered[-1].register_birth()
        return registered[-1]

    yield register
    for worker in registered:
        worker.register_death()


def others(release: str = "NEW") -> list[str]:
    # A query of its own: pg_stat_activity is a snapshot taken once per transaction.
    return other_releases(release=release, connection=connection, redis=redis_connection())


@pytest.mark.django_db
def test_a_postgresql_session_of_another_releases_process_type_is_reported(sessions):
    web = sessions("formation/web/OLD")
    assert others() == [f"web of release OLD (PostgreSQL session pid {web.info.backend_pid} from 127.0.0.1)"]


@pytest.mark.django_db
def test_a_postgresql_session_of_a_release_that_does_not_name_itself_is_reported(sessions):
    unnamed = sessions("formation")
    assert others() == [
        f"a PostgreSQL session of a release that does not name itself (pid {unnamed.info.backend_pid} from 127.0.0.1)"
    ]


@pytest.mark.django_db
def test_an_rq_worker_of_another_release_or_of_none_is_reported(workers):
    old = workers(worker_name(release="OLD"))
    unnamed = workers("0123456789abcdef0123456789abcdef")  # RQ's own names: 32 hex digits
    assert sorted(others()) == sorted(
        [
            f"worker of release OLD (RQ worker {old.name} on {old.hostname}, pid {old.pid})",
            f"worker of a release that does not name itself (RQ worker {unnamed.name} on {unnamed.hostname}, "
            f"pid {unnamed.pid})",
        ]
    )


@pytest.mark.django_db
def test_one_offs_other_programs_and_processes_of_the_same_release_are_not_reported(sessions, workers):
    for name in ("formation/shell/OLD", "formation/release/OLD", "formation/web/NEW", "formation/worker/NEW", "psql"):
        sessions(name)
    workers(worker_name(release="NEW"))
    assert others() == []


def marked_case(*operations):
    """Return a migration ``0002_case`` of ``operations`` marked contract, following INITIAL, and its loader."""
    case = migration("0002_case", *operations, dependencies=[(APP, "0001_initial")], contract=True)
    return case, loader_of(INITIAL, case)


CANNOT_WAIT = {
    "RenameField": (migrations.RenameField("shelf", "label", "title"), RENAME_CANNOT_WAIT),
    "RenameModel": (migrations.RenameModel("Shelf", "Rack"), RENAME_CANNOT_WAIT),
    "RemoveField, NOT NULL without a database default": (
        migrations.RemoveField("shelf", "label"),
        REQUIRED_DROP_CANNOT_WAIT,
    ),
}


@pytest.mark.parametrize(("operation", "problem"), CANNOT_WAIT.values(), ids=CANNOT_WAIT.keys())
def test_a_contract_step_that_breaks_the_new_version_cannot_wait_for_the_post_deploy_step(operation, problem):
    case, loader = marked_case(operation)
    steps = steps_that_cannot_wait(migration=case, loader=loader)
    assert [(step.operation, step.problem) for step in steps] == [(operation.describe(), problem)]


def test_dropping_a_nullable_column_or_a_table_can_wait_for_the_post_deploy_step():
    case, loader = marked_case(migrations.RemoveField("shelf", "note"))
    assert steps_that_cannot_wait(migration=case, loader=loader) == []
    case, loader = marked_case(migrations.DeleteModel("Shelf"))
    assert steps_that_cannot_wait(migration=case, loader=loader) == []


@pytest.mark.django_db
def test_the_release_phase_refuses_a_marked_rename_before_applying_anything():
    _case, loader = marked_case(migrations.RenameField("shelf", "label", "title"))
    loader.applied_migrations = {(APP, "0001_initial"): INITIAL}
    executor = StagedExecutor(connection)
    executor.loader = loader
    with pytest.raises(ContractCannotWait, match=r"^release: stages\.0002_case: Rename field label on shelf to title "):
        executor.migration_plan([(APP, "0002_case")])


@pytest.mark.django_db
def test_a_session_named_by_instance_pid_and_host_is_reported_by_its_type_and_release(sessions):
    web = sessions("formation/web.2/OLD/4242@web-7d9f")
    current = sessions("formation/worker.1/NEW/4243@worker-1")
    assert current.info.backend_pid
    assert others() == [f"web.2 of release OLD (PostgreSQL session pid {web.info.backend_pid} from 127.0.0.1)"]


@pytest.mark.django_db
def test_behind_a_pooler_postgresql_sessions_are_not_taken_for_processes(sessions):
    # An idle server connection of PgBouncer keeps the name of the last client that used it.
    sessions("formation/web.2/OLD/4242@web-7d9f")
    assert other_releases(release="NEW", connection=connection, redis=redis_connection(), sessions=False) == []
