"""The Content-Security-Policy in Chromium: the storefront, the order page and the admin run under
it without a single violation (no inline script or style anywhere), and the admin's scripts work."""

import re

import pytest
from playwright.sync_api import expect

from embedded.polling import wait_until
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

# Each violation the browser reports, in the page's own list (set up before any page script runs).
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def watched(context):
    """A page that records CSP violations, from events and from the console; return (page, reports)."""
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))

    def reports() -> list[str]:
        events = page.evaluate("window.cspViolations")
        return events + [text for text in console if "Content Security Policy" in text]

    return page, reports


def test_the_storefront_and_the_order_page_report_no_csp_violation(formation, watched):
    web = formation.start("web")
    formation.start("worker")
    base = f"http://127.0.0.1:{web.env['PORT']}"
    order = factories.order()
    page, reports = watched

    page.goto(base + "/")
    expect(page.locator("#shop-css")).to_have_count(1)
    assert page.evaluate("getComputedStyle(document.querySelector('.site-header')).display") == "flex"
    assert reports() == []

    page.goto(f"{base}/orders/{order.pk}/")
    # The status script (a static file) runs: it polls and writes the paid status in place.
    expect(page.locator("#order-status")).to_have_text("paid", timeout=30_000)
    assert reports() == []

    # The watch itself works: an inline script is blocked and reported.
    page.evaluate("document.body.append(Object.assign(document.createElement('script'), {textContent: '1'}))")
    # Polled from here: wait_for_function would evaluate a string in the page, which the policy forbids.
    wait_until(lambda: page.evaluate("window.cspViolations.length"), deadline=5, message="the violation report")
    assert any(report.startswith("script-src") for report in reports())


def test_the_admin_works_under_the_policy(formation, watched):
    web = formation.start("web")
    base = f"http://127.0.0.1:{web.env['PORT']}"
    factories.staff_user(username="admin", superuser=True)
    order = factories.order()
    page, reports = watched

    page.goto(base + "/admin/login/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(factories.STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text("admin")

    page.goto(base + "/admin/orders/product/")
    # actions.js: "select all" ticks every row and updates the counter, which only its script does.
    page.locator("#action-toggle").check()
    expect(page.locator("#result_list input.action-select").first).to_be_checked()
    expect(page.locator(".action-counter")).to_have_text(re.compile(r"^(\d+) of \1 selected$"))

    page.goto(f"{base}/admin/orders/order/{order.pk}/change/")
    expect(page.locator("#content h1")).to_be_visible()
    # nav_sidebar.js: the sidebar's toggle button collapses the navigation only through its script.
    before = page.locator("#main").get_attribute("class")
    page.locator("#toggle-nav-sidebar").click()
    expect(page.locator("#main")).not_to_have_class(before)
    assert reports() == []

    # django-rq's dashboard, whose own template has an inline <style> (overridden: a static file).
    page.goto(base + "/admin/django_rq/dashboard/")
    expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    assert reports() == []
    expect(page.locator("link[href*='django_rq/stats']")).to_have_count(1)
    # Its confirmation pages (empty a queue, clear its failed jobs, requeue them) override theirs too.
    for action in ("empty", "failed/clear", "requeue-all"):
        page.goto(f"{base}/admin/django_rq/dashboard/queues/0/{action}/")
        expect(page.locator("link[href*='django_rq/data']")).to_have_count(1)
    assert reports() == []
