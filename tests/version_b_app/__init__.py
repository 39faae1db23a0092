"""Version B of the shop in tests/process/test_two_versions.py: the same code plus migrations on ``orders_order``.

The app has no models: its migrations declare a state-only copy of ``orders.Order`` (the table
``orders_order``, its primary key alone; no SQL) and change that table with Django's own
operations, so the release phase checks and applies exactly the SQL ``makemigrations`` would
write for a field added to ``orders.Order``. Installed only by tests.settings_version_b
(``migrations``: an expand step, a hold, a contract step marked ``contract = True``) and
tests.settings_version_b_unmarked (``unmarked/migrations``: an expand step, then a contract step
left unmarked); the tests drop what it adds afterwards.
"""
