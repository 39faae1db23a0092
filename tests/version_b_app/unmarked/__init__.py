"""Version B''s migrations of tests/version_b_app (settings.MIGRATION_MODULES of tests.settings_version_b_unmarked)."""
