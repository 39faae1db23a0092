"""Form POSTs that Django refuses to read are a 400 on every page, never a 500.

Django reads a form body only when it is ``application/x-www-form-urlencoded`` in UTF-8, the
charset spelled exactly ``utf-8`` in any case (django/http/request.py,
``HttpRequest._load_post_and_files``); ``utf8`` or ``utf_8`` are refused like ``latin1``. When the
CSRF check is the first to read such a body, Django's 400 view (``requires_csrf_token``) reads it
again and the request ends as a 500: core.middleware.RejectNonUtf8FormsMiddleware answers 400
first. Each request carries a valid CSRF cookie and token: without them CSRF answers 403 before
reading the body and hides the fault.
"""

import urllib.parse

import pytest
from django.test import Client

from embedded.shopper import cart_fill, checkout_data, hidden
from orders.models import Order
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

FORM = "application/x-www-form-urlencoded"

# charset parameter as sent (None: no parameter) -> whether Django reads the body.
CHARSETS = {
    "absent": (None, True),
    "empty": ("", True),  # not a codec name: Django ignores it and reads UTF-8
    "utf-8": ("utf-8", True),
    "UTF-8": ("UTF-8", True),
    "Utf-8 quoted": ('"Utf-8"', True),
    "unknown name": ("no-such-charset", True),  # not a codec name either
    "utf8": ("utf8", False),
    "utf_8": ("utf_8", False),
    "UTF8": ("UTF8", False),
    "space then utf-8": ('" utf-8"', False),
    "latin1": ("latin1", False),
    "utf-16": ("utf-16", False),
}


def _client_and_token(path: str = "/") -> tuple[Client, str]:
    """A CSRF-enforcing client holding the CSRF cookie, and the form token from ``path``."""
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    return client, hidden("csrfmiddlewaretoken", client.get(path).content.decode())


def _start(client, token):
    return "/checkout/start/", {"product": "procfile-mug", "csrfmiddlewaretoken": token}, 303


def _checkout(client, token):
    cart_fill(client)
    page = client.get("/checkout/").content.decode()
    data = checkout_data(token=hidden("token", page), csrfmiddlewaretoken=hidden("csrfmiddlewaretoken", page))
    return "/checkout/", data, 303


def _admin_login(client, token):
    data = {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": token, "next": "/admin/"}
    return "/admin/login/", data, 200  # the form again, with its error


def _health(client, token):
    return "/health", {"csrfmiddlewaretoken": token}, 405


ENDPOINTS = {"buy": _start, "checkout": _checkout, "admin login": _admin_login, "POST /health": _health}


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize(("charset", "accepted"), CHARSETS.values(), ids=CHARSETS.keys())
def test_a_form_post_is_read_as_django_reads_it_or_refused_with_a_400(product, endpoint, charset, accepted):
    client, token = _client_and_token()
    path, data, normal_status = endpoint(client, token)
    body = urllib.parse.urlencode(data)
    content_type = FORM if charset is None else f"{FORM}; charset={charset}"
    encoded = body.encode("utf-16") if charset == "utf-16" else body.encode()
    response = client.generic("POST", path, encoded, content_type=content_type)
    if accepted:
        assert response.status_code == normal_status
    else:
        assert response.status_code == 400
        assert response.content.decode() == "Form posts must be UTF-8 encoded."
    expected_orders = 1 if accepted and endpoint is _checkout else 0
    assert Order.objects.count() == expected_orders


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize(
    "padding",
    [
        {f"f{n}": "x" for n in range(1001)},  # DATA_UPLOAD_MAX_NUMBER_FIELDS, Django's default: 1000
        {"pad": "x" * 2_621_440},  # DATA_UPLOAD_MAX_MEMORY_SIZE, Django's default: 2.5 MiB
    ],
    ids=["1001 fields", "a body over 2.5 MiB"],
)
def test_a_form_post_past_djangos_limits_is_a_400(product, endpoint, padding):
    # Django marks these bodies as read, so its error views do not fail on them.
    client, token = _client_and_token()
    path, data, _ = endpoint(client, token)
    response = client.generic("POST", path, urllib.parse.urlencode({**data, **padding}), content_type=FORM)
    assert response.status_code == 400
    assert Order.objects.count() == 0


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize(
    ("charset", "proceeds"), [("utf8", True), ("latin1", True), ("no-such-charset", True), ("utf-16", False)]
)
def test_a_multipart_form_post_in_any_charset_is_read_in_it(product, endpoint, charset, proceeds):
    # Django parses multipart bodies in the declared charset, and marks one it cannot parse as read.
    # The ASCII fields read as UTF-16 are not the CSRF token: that post is refused (403), not a 500.
    client, token = _client_and_token()
    path, data, normal_status = endpoint(client, token)
    boundary = "formation-boundary"
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in data.items()
    )
    body += f"--{boundary}--\r\n"
    content_type = f"multipart/form-data; boundary={boundary}; charset={charset}"
    response = client.generic("POST", path, body.encode(), content_type=content_type)
    assert response.status_code == (normal_status if proceeds else 403)
    assert Order.objects.count() == (1 if proceeds and endpoint is _checkout else 0)


@pytest.mark.parametrize("endpoint", ENDPOINTS.values(), ids=ENDPOINTS.keys())
@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf8", "text/plain; charset=utf-16", "multipart/form-data", "application/octet-stream"],
)
def test_other_content_types_are_never_a_500(product, endpoint, content_type):
    # Django reads no form fields from these (a multipart body without a boundary is a 400 it marks as
    # read): CSRF takes the token from the header, the view sees an empty form.
    client, token = _client_and_token()
    path, _, _ = endpoint(client, token)
    response = client.generic("POST", path, b'{"a": 1}', content_type=content_type, HTTP_X_CSRFTOKEN=token)
    assert response.status_code in {200, 400, 405}
    assert Order.objects.count() == 0
