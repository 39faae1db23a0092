"""core/releases.py: each process's release, registered in Redis while its process type runs."""

import pytest
from django.core.management import call_command

from core.queues import redis_connection
from core.releases import ReleaseRegistration, registered_processes, release_registered
from tests.support.queues import run_burst_worker


def test_a_registration_names_type_release_host_and_pid_until_it_stops(settings):
    with release_registered(process_type="worker") as registration:
        registration._stop.wait(0.2)  # the thread's first write
        [process] = registered_processes(redis_connection())
        assert (process["type"], process["release"]) == ("worker", settings.RELEASE)
        assert redis_connection().ttl(registration.key) > 0
    assert registered_processes(redis_connection()) == []


def test_a_registration_comes_back_after_redis_lost_it():
    registration = ReleaseRegistration(process_type="mailer", release="R", interval=0.05).start()
    try:
        registration._stop.wait(0.2)
        redis_connection().flushdb()  # a Redis restarted without persistence, or emptied
        registration._stop.wait(0.3)
        assert [process["release"] for process in registered_processes(redis_connection())] == ["R"]
    finally:
        registration.stop()


@pytest.mark.django_db(transaction=True, databases=["default", "gateway"])
def test_process_type_commands_run_in_process_leave_no_registration():
    run_burst_worker()
    call_command("mailer", "--once", verbosity=0)
    assert registered_processes(redis_connection()) == []
