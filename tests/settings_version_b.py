"""Settings of version B in tests/process/test_two_versions.py: the project's, plus tests.version_b_app,
whose migrations expand ``orders_order`` in the release phase and contract it in the post-deploy step."""

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.version_b_app"]
