"""Start-up: each process type is ready well within 10 s, and never hangs on a missing service."""

import json
import urllib.error
import urllib.request

import pytest

from embedded.servers import free_port
from tests.support.databases import ALL_DATABASES

pytestmark = [
    pytest.mark.process,
    pytest.mark.startup,
    pytest.mark.django_db(transaction=True, databases=ALL_DATABASES),
]

# The twelve-factor checklist's limit for a process to be up (https://12factor.net/disposability
# says "a few seconds"; the issue allows 10 s). Benchmarks in bench/ measure the real figure.
READY_WITHIN = 10


@pytest.mark.parametrize("kind", ["web", "worker", "scheduler", "mailer"])
def test_each_process_type_is_ready_within_ten_seconds(formation, kind):
    process = formation.start(kind, wait=False)
    process.wait_ready(READY_WITHIN)


@pytest.mark.parametrize(
    ("kind", "variable"),
    [("worker", "DATABASE_URL"), ("worker", "REDIS_URL"), ("scheduler", "REDIS_URL"), ("mailer", "DATABASE_URL")],
)
def test_unreachable_service_at_start_is_one_line_and_exit_1(formation, kind, variable):
    closed = {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/formation",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }[variable]
    process = formation.start(kind, wait=False, STARTUP_RETRY_SECONDS="2", **{variable: closed})
    assert process.wait(deadline=30) == 1
    output = process.output()
    failures = [line for line in output.splitlines() if "unreachable after" in line]
    assert len(failures) == 1, output
    assert variable in failures[0]
    assert "Traceback" not in output


def test_web_starts_without_its_services_and_reports_them_on_ready(formation):
    web = formation.start(
        "web",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/formation",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    base = f"http://127.0.0.1:{web.env['PORT']}"
    with urllib.request.urlopen(base + "/health", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(base + "/ready", timeout=15)
    assert error.value.code == 503
    checks = json.loads(error.value.read())["checks"]
    assert checks["database"] != "ok" and checks["redis"] != "ok"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(base + "/", timeout=15)  # a page that needs the database
    assert error.value.code == 503
    assert error.value.headers["Retry-After"] == "5"
    output = web.output()
    assert "PostgreSQL (DATABASE_URL) unreachable" in output and "Redis (REDIS_URL) unreachable" in output
    assert "Traceback" not in output


def test_a_bad_setting_stops_web_with_one_line(formation):
    web = formation.start("web", wait=False, DATABASE_URL="mysql://root@127.0.0.1/formation")
    assert web.wait(deadline=30) != 0
    assert web.output().count("configuration error: DATABASE_URL") == 1
