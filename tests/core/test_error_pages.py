"""Error answers are pages in the shopper's words (a heading, a sentence, a way back), never
Django's bare pages, and none has an inline style or script the CSP would block."""

import json
import logging
import re

import psycopg
import pytest
from django.core.exceptions import PermissionDenied
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.views import defaults

from core import middleware
from embedded.harness import formation_database_url
from embedded.shopper import element
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

INLINE = re.compile(r"<style|\sstyle=|<script(?![^>]*\ssrc=)|\son[a-z]+=")


def page_of(response) -> str:
    html = response.content.decode()
    assert response["Content-Type"].startswith("text/html")
    assert not INLINE.findall(html)
    return html


def test_an_unknown_page_is_the_shops_404():
    html = page_of(Client().get("/no-such-page/"))
    assert element(html, "#error-title").text == "Page not found"
    assert element(html, "#error-home").attrs["href"] == "/"


def test_a_foreign_host_is_the_shops_400():
    response = Client().get("/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    html = page_of(response)
    assert element(html, "#error-title").text == "We could not understand that request"
    assert element(html, "#error-home").attrs["href"] == "/"


def test_a_refused_permission_is_the_shops_403():
    response = defaults.permission_denied(RequestFactory().get("/"), PermissionDenied())
    assert response.status_code == 403
    html = page_of(response)
    assert element(html, "#error-title").text == "You cannot open this page"


def test_a_form_without_its_csrf_token_says_the_page_expired():
    response = Client(enforce_csrf_checks=True).post("/cart/add/", {"product": "MUG"})
    assert response.status_code == 403
    html = page_of(response)
    assert element(html, "#error-title").text == "This page has expired"
    assert element(html, "#error-message").text == (
        "This page has expired or cookies are blocked; go back, reload the page and try again."
    )
    assert element(html, "#error-home").attrs["href"] == "/"


@pytest.mark.parametrize("path", ["/cart/add/", "/cart/update/", "/checkout/start/"])
def test_opening_a_post_only_address_is_a_405_page_that_keeps_allow(path):
    response = Client().get(path)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    html = page_of(response)
    assert element(html, "#error-title").text == "This page cannot be opened directly"
    assert element(html, "#error-home").attrs["href"] == "/"


def test_the_500_page_renders_with_debug_off_without_context_or_database(settings):
    settings.DEBUG = False
    with CaptureQueriesContext(connections["default"]) as queries:
        response = defaults.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert len(queries) == 0
    html = page_of(response)
    assert element(html, "#error-title").text == "Sorry, something went wrong on our side"
    assert element(html, "#error-home").attrs["href"] == "/"
    # The stylesheet's unhashed name, which collectstatic writes next to the hashed one.
    assert element(html, "[rel=stylesheet]").attrs["href"] == "/static/css/shop.css"


class _PostgresEndsTheConnectionAfterTheView:
    """Test middleware right below SessionMiddleware: once the view has answered, PostgreSQL ends
    the request's connection (as a restart does), so the session save that follows fails."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        with psycopg.connect(formation_database_url(), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
        return response


class _PostgresEndsTheConnectionBeforeTheView:
    """Test middleware right below SessionMiddleware: PostgreSQL ends the request's connection
    before the view runs, so the view's first query fails."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        connection.ensure_connection()
        with psycopg.connect(formation_database_url(), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
        return self.get_response(request)


class _PostgresTurnsReadOnlyAfterTheView:
    """Test middleware right below SessionMiddleware: once the view has answered, the request's
    connection refuses writes (as after a failover to a standby), so the session save fails with
    SQLSTATE 25006."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        with connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
        return response


class _PostgresDiskFullInAMiddleware:
    """Test middleware right below SessionMiddleware whose own write, after the view, meets
    PostgreSQL's SQLSTATE 53100 disk_full (raised by the server itself with that code: filling a
    disk is no cheap test)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        with connection.cursor() as cursor:
            cursor.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = 'disk_full'; END $$"
            )
        return response


def _below_sessions(settings, name: str) -> None:
    below = settings.MIDDLEWARE.index("django.contrib.sessions.middleware.SessionMiddleware") + 1
    settings.MIDDLEWARE = [*settings.MIDDLEWARE[:below], f"{__name__}.{name}", *settings.MIDDLEWARE[below:]]


def request_lines(caplog) -> list[logging.LogRecord]:
    """The WARNING-or-worse records of core.middleware and django.request (Django's request log)."""
    names = ("core.middleware", "django.request")
    return [r for r in caplog.records if r.name in names and r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("_PostgresEndsTheConnectionAfterTheView", "unavailable"),
        ("_PostgresTurnsReadOnlyAfterTheView", "read-only"),
        ("_PostgresDiskFullInAMiddleware", "disk full"),
    ],
)
def test_postgres_gone_during_the_session_save_after_the_view_is_the_503_page(settings, caplog, fault, cause):
    # The soak saw 500s here during PostgreSQL restarts: the error is raised by SessionMiddleware,
    # outside the view, where DatabaseUnavailableMiddleware's process_exception cannot see it.
    settings.DEBUG = False
    factories.product(sku="MUG")
    _below_sessions(settings, fault)
    client = Client(raise_request_exception=False)
    response = client.post("/cart/add/", {"product": "MUG", "quantity": "1"})
    connections.close_all()  # the test client leaves the connection as the fault left it
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    html = page_of(response)
    assert element(html, "#error-title").text == "The shop is unavailable for a moment"
    assert element(html, "#error-home").attrs["href"] == "/"
    # The security headers of every other answer, though no middleware below the sessions ran.
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    # One line, no traceback: Django's "Service Unavailable" line with the traceback is not repeated.
    [line] = request_lines(caplog)
    assert line.name == "core.middleware"
    assert line.getMessage().startswith(f"database unavailable ({cause}) for POST /cart/add/: ")
    assert line.exc_info is None


def test_postgres_gone_under_a_json_endpoint_is_a_json_503_naming_the_cause(settings, caplog, product):
    settings.DEBUG = False
    order = factories.order(product=product)
    _below_sessions(settings, "_PostgresEndsTheConnectionBeforeTheView")
    response = Client(raise_request_exception=False).get(f"/orders/{order.pk}/status.json")
    connections.close_all()  # the test client leaves the ended connection to the next test
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"error": "database unavailable", "cause": "unavailable"}
    [line] = request_lines(caplog)
    assert line.getMessage().startswith(f"database unavailable (unavailable) for GET /orders/{order.pk}/status.json: ")
    assert line.exc_info is None


def test_any_other_error_outside_a_view_is_still_the_500_page(settings):
    settings.DEBUG = False
    response = middleware.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert element(page_of(response), "#error-title").text == "Sorry, something went wrong on our side"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/cart/", "/health", "/no-such-page/"])
def test_head_answers_gets_status_and_headers_without_a_body(path):
    # Through Django's WSGI handler itself: the test client strips HEAD bodies on its own
    # (django.test.client.conditional_content_removal), so it could not see one.
    handler = WSGIHandler()
    get = handler.get_response(RequestFactory().get(path))
    head = handler.get_response(RequestFactory().head(path))
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head["Content-Type"] == get["Content-Type"]
    assert int(head["Content-Length"]) == len(get.content)
