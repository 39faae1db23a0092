"""Admin logins are rate-limited per username and address (django-axes): locked out, recorded, cleared by staff."""

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.core.management import call_command

from embedded.shopper import element
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

PASSWORD = factories.STAFF_PASSWORD


@pytest.fixture
def admin_user(db):
    return factories.staff_user(username="admin", superuser=True)


def log_in(client, password: str, *, address: str = "203.0.113.7", **headers):
    """POST the admin's login form from ``address``; return the response (302 when logged in)."""
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": "admin", "password": password},
        REMOTE_ADDR=address,
        **headers,
    )


def fail(client, times: int, **kwargs) -> None:
    """Log in with a wrong password ``times`` times: the form again with its error, then (the
    AXES_FAILURE_LIMIT-th failure) the lockout page."""
    for _ in range(times):
        response = log_in(client, "wrong", **kwargs)
        if AccessAttempt.objects.filter(failures_since_start__gte=5).exists():
            assert response.status_code == 429
        else:
            assert response.status_code == 200
            assert "Please enter the correct username and password" in response.content.decode()


def test_five_failures_lock_the_username_out_from_that_address_and_are_recorded(client, admin_user, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    fail(client, 5)
    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address, attempt.failures_since_start) == ("admin", "203.0.113.7", 5)

    locked = log_in(client, PASSWORD)  # the right password does not help during the cool-off
    assert locked.status_code == 429
    assert "too many login attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert AccessFailureLog.objects.count() in (0, 5)  # the failure log is axes' optional second record

    # The same user from another address, and the admin from this one, are not locked out.
    assert log_in(client, PASSWORD, address="198.51.100.9").status_code == 302


def test_four_failures_do_not_lock_out(client, admin_user):
    fail(client, 4)
    assert log_in(client, PASSWORD).status_code == 302


def test_staff_clear_a_lockout_with_axes_reset_username(client, admin_user):
    fail(client, 5)
    assert log_in(client, PASSWORD).status_code == 429

    call_command("axes_reset_username", "admin", verbosity=0)
    assert log_in(client, PASSWORD).status_code == 302


def test_staff_see_the_lockout_in_the_admin_and_clear_it_by_deleting_the_attempt(client, admin_user):
    fail(client, 5)
    attempt = AccessAttempt.objects.get()
    client.force_login(admin_user)
    page = client.get("/admin/axes/accessattempt/").content.decode()
    assert f"/admin/axes/accessattempt/{attempt.pk}/change/" in page
    response = client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    client.logout()
    assert log_in(client, PASSWORD).status_code == 302


def test_x_forwarded_for_is_ignored_when_not_behind_the_proxy(client, admin_user, settings):
    """A client cannot choose the address it is counted under by sending the header itself."""
    settings.CLIENT_IP_FROM_X_FORWARDED_FOR = False
    for n in range(5):
        fail(client, 1, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert log_in(client, PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


def test_behind_the_proxy_the_address_is_the_one_the_proxy_appended(client, admin_user, settings):
    settings.CLIENT_IP_FROM_X_FORWARDED_FOR = True
    proxy = "10.0.0.2"
    for n in range(5):  # whatever the client puts first, the proxy appends the real address last
        fail(client, 1, address=proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.7")
    assert AccessAttempt.objects.get().ip_address == "203.0.113.7"
    assert log_in(client, PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    # Another shopper behind the same proxy is not locked out.
    assert log_in(client, PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 302


def test_the_lockout_page_says_for_how_long_and_how_staff_clear_it(client, admin_user, settings):
    fail(client, 5)
    locked = log_in(client, PASSWORD)
    assert locked.status_code == 429
    assert locked["Retry-After"] == str(15 * 60)  # AXES_COOLOFF_MINUTES, in seconds
    page = locked.content.decode()
    assert element(page, "#lockout-title").text == "Too many login attempts"
    assert element(page, "#lockout-message").text == (
        "There were too many login attempts: after 5 failed ones, logins to this account from this "
        "address are locked for 15 minutes. Try again after that."
    )
    assert "axes_reset_username" in element(page, "#lockout-help").text
