"""A test-only app with one table, ``stages_app_shelf``, and two sets of migrations for the release
phase's expand/contract rule (processes/stages.py):

- ``marked``: 0001 creates the table, 0002 adds a nullable column (expand), 0003 adds a NOT NULL
  column with a one-off default, as ``makemigrations`` writes it, marked ``contract = True``, and
  0004, which depends on 0003, adds another nullable column (expand);
- ``refused``: 0001 to 0003 the same, with 0003 unmarked, which the release phase must refuse.

Not in the project's settings: tests install it (tests/fixtures/stages.py in this process,
tests/settings_stages.py for a process), pick a set through MIGRATION_MODULES and drop the table
afterwards. No models.py: the migrations alone are what is tested.
"""
