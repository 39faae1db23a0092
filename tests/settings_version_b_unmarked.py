"""Settings of version B' in tests/process/test_two_versions.py: version B whose second migration is a
contract step left unmarked (tests/version_b_app/unmarked/migrations), which the release phase refuses."""

from tests.settings_version_b import *  # noqa: F403

MIGRATION_MODULES = {"version_b_app": "tests.version_b_app.unmarked.migrations"}
