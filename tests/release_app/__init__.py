"""A test-only app whose one migration adds a nullable column to ``orders_order``, as a release would.

Installed only by ``tests.settings_release`` (the settings of the release processes that
tests/process/test_release.py starts); the tests migrate it back to zero afterwards.
"""
