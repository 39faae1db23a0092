"""Test helpers, one module per concern; import from the module (``from tests.support.polling import wait_until``).

- ``addresses``: email addresses the shop must refuse (UNDELIVERABLE, LONG_CJK_LABEL)
- ``configuration``: ``manage.py check`` in a fresh process with a changed environment
- ``databases``: the database aliases a test that touches orders needs (ALL_DATABASES)
- ``http``: the storefront over HTTP (Browser, cart_fill, checkout_data, page_lines) and reading
  its pages (hidden, element, element_text)
- ``metrics``: Prometheus expositions (metric_samples, scrape, sample)
- ``polling``: wait_until
- ``queues``: RQ's default queue (run_burst_worker, queued_job_ids)
- ``smtp``: a real SMTP server that records what it receives (RecordingSMTP, start_smtp)
- ``trickle``: a real SMTP server whose EHLO reply trickles (TrickleSMTP)

Saved rows come from the factories (tests/factories.py); fixtures from tests/fixtures/, registered
by the top-level tests/conftest.py. Helpers of the process tests alone are in tests/process/support.py,
of the browser tests in tests/browser/support.py.
"""
