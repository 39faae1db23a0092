"""Every page carries the security headers: a CSP without 'unsafe-inline', Referrer-Policy, nosniff."""

import re
import uuid

import pytest
from django.test import Client

from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

POLICY = {
    "default-src": "'self'",
    "img-src": "'self' data:",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'none'",
    "object-src": "'none'",
}


def directives(header: str) -> dict[str, str]:
    """Return a Content-Security-Policy header as {directive: its sources, space-separated}."""
    parts = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {part[0]: part[1] if len(part) > 1 else "" for part in parts}


@pytest.fixture
def pages(product):
    order = factories.order(product=product)
    return {
        "storefront": "/",
        "order page": f"/orders/{order.pk}/",
        "order status": f"/orders/{order.pk}/status.json",
        "admin login": "/admin/login/",
        "unknown order": f"/orders/{uuid.uuid4()}/",
    }


@pytest.mark.parametrize("page", ["storefront", "order page", "order status", "admin login", "unknown order"])
def test_every_page_carries_the_security_headers(pages, page):
    response = Client().get(pages[page])
    assert response.status_code == (404 if page == "unknown order" else 200)
    assert directives(response["Content-Security-Policy"]) == POLICY
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_pages_have_no_inline_script_or_style(pages):
    """The policy would block them: scripts and styles are static files only."""
    inline = re.compile(r"<style|\sstyle=|<script(?![^>]*\ssrc=)|\son[a-z]+=")
    for page in ("storefront", "order page", "admin login"):
        html = Client().get(pages[page]).content.decode()
        assert not inline.findall(html), page


def test_redirects_and_refusals_carry_the_policy_too():
    """CSPMiddleware sits right after SecurityMiddleware: answers made before the view (the slash
    redirect of CommonMiddleware, the 400 for a Host header the shop does not answer to) have it."""
    redirect = Client().get("/cart")
    assert (redirect.status_code, redirect["Location"]) == (301, "/cart/")
    assert directives(redirect["Content-Security-Policy"]) == POLICY

    foreign = Client().get("/", HTTP_HOST="attacker.example")
    assert foreign.status_code == 400
    assert directives(foreign["Content-Security-Policy"]) == POLICY

    not_allowed = Client().get("/cart/add/")
    assert not_allowed.status_code == 405
    assert directives(not_allowed["Content-Security-Policy"]) == POLICY
