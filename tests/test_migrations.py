"""The project's own migrations against the release phase's rule, in CI (processes/stages.py,
docs/releases.md#expand-and-contract): each is an expand step, a contract migration marked
``contract = True``, or one of the shipped ones that APPLIED_EVERYWHERE acknowledges, and that list
names only real contract migrations of the project."""

import sysconfig
from pathlib import Path

import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from processes import stages
from processes.stages import APPLIED_EVERYWHERE, contract_steps, unmarked_contract_steps

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db


def project_apps() -> set[str]:
    """Return the labels of the installed apps whose module lives in this repository (not in an
    installed package, wherever the virtual environment is)."""
    installed = Path(sysconfig.get_paths()["purelib"]).resolve()
    return {
        app.label
        for app in apps.get_app_configs()
        if (path := Path(app.path).resolve()).is_relative_to(ROOT) and not path.is_relative_to(installed)
    }


def project_migrations(loader: MigrationLoader) -> list:
    """Return the migrations of the project's apps that ``migrate`` would apply to a new database, in order."""
    own = project_apps()
    assert {"orders", "mailer"} <= own
    return [loader.graph.nodes[key] for key in sorted(loader.graph.nodes) if key[0] in own]


# Outside a test transaction, as the release phase's migrate runs it: Django refuses even to collect
# the SQL of AddIndexConcurrently inside a transaction.
@pytest.mark.django_db(transaction=True)
def test_every_migration_of_the_project_is_expand_marked_contract_or_applied_everywhere():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    migrations = project_migrations(loader)
    assert len(migrations) >= 13
    unmarked = unmarked_contract_steps(migrations=migrations, loader=loader, connection=connection)
    assert not unmarked, (
        "contract steps in migrations not marked contract = True, which the release phase refuses "
        "(docs/releases.md#expand-and-contract):\n" + "\n".join(step.describe() for step in unmarked)
    )


@pytest.mark.parametrize("key", sorted(APPLIED_EVERYWHERE), ids=".".join)
def test_each_migration_applied_everywhere_is_a_migration_of_the_project_with_a_contract_step(key, monkeypatch):
    loader = MigrationLoader(None, ignore_no_migrations=True)
    assert key in {(node.app_label, node.name) for node in project_migrations(loader)}, "no migration of the project"
    monkeypatch.setattr(stages, "APPLIED_EVERYWHERE", frozenset())
    steps = contract_steps(migration=loader.graph.nodes[key], loader=loader, connection=connection)
    assert steps, "an expand migration: nothing for APPLIED_EVERYWHERE to acknowledge"
