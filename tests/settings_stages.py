"""Settings of the release processes that tests start with tests.stages_app installed: the
project's, plus that app with the migration set STAGES_APP_MIGRATIONS names ("marked", the
default, or "refused"; see tests/stages_app/__init__.py)."""

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.stages_app"]
MIGRATION_MODULES = {"stages_app": f"tests.stages_app.{os.environ.get('STAGES_APP_MIGRATIONS', 'marked')}.migrations"}
