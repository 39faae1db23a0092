"""A PostgreSQL connection that goes silent without being closed (an expired NAT entry, a vanished
host: packets dropped, no reset) ends within DATABASE_SILENCE_TIMEOUT (libpq keepalives and
tcp_user_timeout, project.env.keepalive_options) in every process type that holds one, and the
process recovers. The link is a real one made silent (tests.support.silent_link: a network
namespace and a veth pair, root only); the processes start from the Procfile's lines with
CONN_MAX_AGE > 0, so the connection made before the silence is the one they reuse."""

import re
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from tests import factories
from tests.process.test_liveness import kubelet_probe, start_as_deployed
from tests.support import silent_link
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

SILENCE = 4  # seconds: DATABASE_SILENCE_TIMEOUT of the processes under test (its minimum)
CONNECT = 2  # seconds: DATABASE_CONNECT_TIMEOUT, for the reconnects while the link is silent
SLACK = 3  # seconds of scheduling and the request's own work on 2 shared cores


@pytest.fixture
def link():
    silent_link.require()
    database = connection.settings_dict
    opened = silent_link.SilentLink((database["HOST"] or "127.0.0.1", int(database["PORT"])))
    try:
        yield opened.open()
    finally:
        opened.close()


def through(link: silent_link.SilentLink, url: str) -> str:
    """Return DATABASE_URL ``url`` with its host and port replaced by the link's."""
    parts = urlsplit(url)
    host, port = link.address
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition('@')[0]}@{host}:{port}"))


def env_through(link: silent_link.SilentLink, formation) -> dict[str, str]:
    return {
        "DATABASE_URL": through(link, formation.env["DATABASE_URL"]),
        "DATABASE_SILENCE_TIMEOUT": str(SILENCE),
        "DATABASE_CONNECT_TIMEOUT": str(CONNECT),
        "CONN_MAX_AGE": "600",
    }


def get(port: str, path: str, timeout: float = 60) -> tuple[int, dict[str, str]]:
    """GET ``path`` from web; return (status, headers). A connection ended with no answer raises."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_web_answers_503_within_the_silence_timeout_and_200_once_the_link_heals(formation, link):
    factories.product()
    web = formation.start("web", **env_through(link, formation))
    port = web.env["PORT"]
    assert get(port, "/")[0] == 200  # the worker's persistent connection, made through the link

    link.freeze()
    started = time.monotonic()
    status, headers = get(port, "/")
    took = time.monotonic() - started
    # The reused connection's health check fails after SILENCE, the reconnect after CONNECT; never
    # the gunicorn worker timeout (WEB_TIMEOUT, 30 s), which would answer nothing.
    assert status == 503 and headers.get("Retry-After") == "5", (status, headers, web.output())
    assert took <= SILENCE + CONNECT + SLACK, took

    link.heal()
    wait_until(lambda: get(port, "/", timeout=20)[0] == 200, deadline=20, interval=0.2, message="200 once healed")
    print(f"web: 503 after {took:.1f} s of silence (DATABASE_SILENCE_TIMEOUT={SILENCE})")


def test_the_mailer_says_so_in_one_line_and_sends_every_message_once_after_the_link_heals(formation, smtp, link):
    first = factories.outbox_message(to="before@example.com")
    mailer = start_as_deployed(formation, "mailer", **env_through(link, formation))
    wait_until(lambda: smtp.message_ids() == [first.message_id], deadline=15, message="the first message")

    link.freeze()
    frozen = time.monotonic()
    later = [factories.outbox_message(to=f"during{i}@example.com") for i in range(3)]  # written directly
    lost = "mailer: database unavailable"
    mailer.wait_for_output(lost, deadline=SILENCE + SLACK + 2, interval=0.1)
    noticed = time.monotonic() - frozen
    # The link stays silent for a few more failed passes (each a reconnect cut at CONNECT);
    # meanwhile the loop keeps beating: the manifest's liveness probe passes throughout.
    while time.monotonic() - frozen < noticed + 2 * CONNECT + 1:
        ok, what = kubelet_probe("mailer", "livenessProbe", mailer)
        assert ok, f"liveness failed while PostgreSQL was silent: {what}"
        time.sleep(0.5)

    link.heal()
    wait_until(
        lambda: OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 1 + len(later),
        deadline=30,
        interval=0.2,
        message="every message sent once the link heals",
    )
    ids = smtp.message_ids()
    assert sorted(ids) == sorted([first.message_id, *(message.message_id for message in later)]), ids
    output = mailer.output()
    assert "Traceback" not in output, output
    assert noticed <= SILENCE + SLACK + 2, noticed
    # One line when the outage starts, one when it ends, none for each failed pass between.
    database_lines = [line for line in output.splitlines() if "mailer: database" in line]
    assert len(database_lines) == 2, database_lines
    assert lost in database_lines[0] and "database reachable again" in database_lines[1], database_lines
    failed_passes = int(re.search(r"\((\d+) failed pass", database_lines[1]).group(1))
    assert failed_passes >= 2, database_lines
    print(f"mailer: connection lost noticed after {noticed:.1f} s; {failed_passes} failed passes, 2 lines")
