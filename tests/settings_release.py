"""Settings of the release processes in tests/process/test_release.py: the project's, plus an app
whose migration alters ``orders_order`` as a real release would."""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.release_app"]
