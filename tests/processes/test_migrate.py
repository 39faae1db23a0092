"""The migrate command's stages (processes/management/commands/migrate.py) in this process, on the
migrations of the test app tests.stages_app: the release phase refuses an unmarked contract
migration and applies nothing, leaves a marked one to the post-deploy step (``migrate --contract``),
which refuses while a process of another release runs unless told to go on. The same as processes,
and on a new database: tests/process/test_release.py."""

import io
import logging

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from embedded.harness import formation_database_url
from tests.support.stages import COLOUR, INITIAL, NOTE, SIZE, recorded, shelf_columns

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(**options) -> str:
    """Run ``manage.py migrate --noinput`` with ``options``; return what it printed."""
    out = io.StringIO()
    call_command("migrate", interactive=False, stdout=out, **options)
    return out.getvalue()


def test_the_release_phase_refuses_an_unmarked_contract_migration_and_applies_nothing(stages_app):
    stages_app("refused")

    with pytest.raises(CommandError) as refused:
        migrate()

    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        "release: stages_app.0003_shelf_size: Add field size to shelf (NOT NULL constraint on columns) is a "
        "contract step, which the release still running cannot live with; nothing was applied."
    )
    # Not even the expand migrations planned before it (0001 creates the table, 0002 adds a column).
    assert (recorded(connection), shelf_columns(connection)) == ([], [])


def test_a_marked_contract_migration_and_those_after_it_wait_for_the_post_deploy_step(stages_app, caplog):
    stages_app("marked")
    with pytest.raises(SystemExit) as check:
        migrate(check_unapplied=True)
    assert check.value.code == 1  # expand migrations wait

    with caplog.at_level(logging.INFO, logger="release"):
        output = migrate()

    assert "Applying stages_app.0002_shelf_note... OK" in output
    assert SIZE not in output
    assert (recorded(connection), shelf_columns(connection)) == ([INITIAL, NOTE], ["id", "label", "note"])
    # 0004 is an expand migration, but it depends on 0003.
    assert (
        "release: 2 migration(s) wait for the post-deploy step (manage.py migrate --contract), "
        "contract ones and those after them: "
        "stages_app.0003_shelf_size, stages_app.0004_shelf_colour"
    ) in caplog.messages
    migrate(check_unapplied=True)  # no SystemExit: exit 0, only the post-deploy step's migration waits

    output = migrate(contract=True)

    assert "Applying stages_app.0003_shelf_size... OK" in output
    assert "Applying stages_app.0004_shelf_colour... OK" in output
    assert (recorded(connection), shelf_columns(connection)) == (
        [INITIAL, NOTE, SIZE, COLOUR],
        ["id", "label", "note", "size", "colour"],
    )


def test_the_post_deploy_step_refuses_while_a_process_of_another_release_runs_unless_told_to_go_on(stages_app):
    stages_app("marked")
    migrate()
    with psycopg.connect(formation_database_url(), application_name="formation/web/OLD") as old:
        with pytest.raises(CommandError) as refused:
            migrate(contract=True)
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"post-deploy: web of release OLD (PostgreSQL session pid {old.info.backend_pid} ")
        assert "nothing was applied" in message
        assert recorded(connection) == [INITIAL, NOTE]

        output = migrate(contract=True, ignore_other_releases=True)

    assert "Applying stages_app.0003_shelf_size... OK" in output
    assert recorded(connection) == [INITIAL, NOTE, SIZE, COLOUR]


def test_behind_a_pooler_without_a_direct_url_the_release_refuses_in_one_line(settings):
    settings.DATABASE_POOLED = True
    with pytest.raises(CommandError) as raised:
        migrate()
    assert str(raised.value).startswith("release: DATABASE_URL goes through a transaction pooler")
    assert "DATABASE_DIRECT_URL" in str(raised.value)
