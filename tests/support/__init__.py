"""Test helpers, one module per concern; import from the module (``from tests.support.smtp import start_smtp``).

- ``addresses``: email addresses the shop must refuse (UNDELIVERABLE, LONG_CJK_LABEL)
- ``configuration``: ``manage.py check`` in a fresh process with a changed environment
- ``databases``: the database aliases a test that touches orders needs (ALL_DATABASES)
- ``metrics``: Prometheus expositions (metric_samples, scrape, sample)
- ``queues``: RQ's default queue (run_burst_worker, queued_job_ids)
- ``release_app``: the test app tests.release_app's migration (RELEASE_SETTINGS, column_count, recorded)
- ``smtp``: a real SMTP server that records what it receives (RecordingSMTP, start_smtp)
- ``stages``: the test app tests.stages_app in a database (shelf_columns, recorded, stages_app_drop)
- ``trickle``: a real SMTP server whose EHLO reply trickles (TrickleSMTP)
- ``silent_smtp``: a real SMTP server that holds a connection unanswered (at the greeting or the end of DATA)
- ``raw_smtp``: the SMTP dialogue the two above share, on a bare socket (RawSMTP)

Shared with the benchmarks and the soak, so they live with the development tools in embedded/:
the process harness (embedded/harness.py), polling with a deadline (embedded/polling.py) and the
storefront over HTTP as a shopper uses it (embedded/shopper.py). Saved rows come from the
factories (tests/factories.py); fixtures from tests/fixtures/, registered by the top-level
tests/conftest.py. Helpers of the process tests alone are in tests/process/support.py, of the
browser tests in tests/browser/support.py.
"""
