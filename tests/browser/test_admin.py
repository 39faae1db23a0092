"""The admin in a real browser (Debian's Chromium through Playwright) against the real formation.

A staff user logs in through the login page, finds an order by its shopper's email, re-runs its
processing and resends its confirmation: web, worker and mailer run as the Procfile starts them,
with the test SMTP recorder; the order keeps its one charge and the shopper gets a second email
with a new Message-ID. django-rq's dashboard opens from the admin index.
"""

import re

import pytest
from playwright.sync_api import expect

from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Charge, Order, OrderStatus, SandboxCharge
from tests import factories
from tests.browser.support import assert_accessible, screenshot
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


@pytest.fixture
def shop(formation):
    """Start web, worker and mailer; return the shop's base URL."""
    web = formation.start("web")
    formation.start("worker")
    formation.start("mailer")
    return f"http://127.0.0.1:{web.env['PORT']}"


def all_sent() -> bool:
    return not OutboxMessage.objects.exclude(status=OutboxStatus.SENT).exists()


def run_action(page, order: Order, label: str) -> None:
    """Tick ``order`` in the order list shown on ``page``, pick the action ``label`` and press Go."""
    page.locator(f"input[name=_selected_action][value='{order.pk}']").check()
    page.get_by_role("combobox", name="Action").select_option(label=label)
    page.get_by_role("button", name="Go").click()
    page.wait_for_load_state()


def test_staff_find_an_order_rerun_it_and_resend_its_confirmation_with_one_charge(shop, context, smtp):
    factories.staff_user(username="staff", superuser=True)
    order = factories.order(quantity=2)
    wait_until(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.PAID, deadline=60, message="paid")
    wait_until(lambda: OutboxMessage.objects.exists() and all_sent(), deadline=60, message="the confirmation sent")

    page = context.new_page()
    page.goto(shop + "/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    assert_accessible(page)
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(factories.STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#site-name")).to_have_text("Formation admin")

    page.locator("#orders-order").get_by_role("link", name="Orders").click()
    page.locator("#searchbar").fill("shopper@example.com")
    page.locator("#searchbar").press("Enter")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    assert_accessible(page)

    run_action(page, order, "Re-run processing (stuck or failed orders)")
    expect(page.locator(".messagelist")).to_contain_text(f"Order {order.pk} is paid already: nothing to do")

    run_action(page, order, "Resend confirmation (paid or failed orders)")
    expect(page.locator("#resend-orders")).to_contain_text("shopper@example.com")
    assert_accessible(page)
    page.get_by_role("button", name="Yes, resend").click()
    expect(page.locator(".messagelist")).to_contain_text(f"Order {order.pk}: confirmation queued again")

    wait_until(lambda: OutboxMessage.objects.count() == 2 and all_sent(), deadline=60, message="the resend sent")
    assert (Charge.objects.count(), SandboxCharge.objects.count()) == (1, 1)
    ids = smtp.message_ids()
    assert len(ids) == 2 and len(set(ids)) == 2

    page.goto(f"{shop}/admin/orders/order/{order.pk}/change/")
    expect(page.locator(f"#attempt-{order.charge.gateway_charge_id} .outcome")).to_have_text("Succeeded")
    resend = OutboxMessage.objects.get(key__contains=":resend:")
    expect(page.locator(f"#email-{resend.pk} .status")).to_have_text("Sent")
    expect(page.locator("#status_changes-group")).to_contain_text("confirmation resent")
    assert_accessible(page)
    screenshot(page, "admin-order")
    with page.expect_navigation():
        page.get_by_role("link", name="View as shopper").click()
    assert page.url == f"{shop}/orders/{order.pk}/"

    # The outbox list fits a 1280 px wide window: no sideways scrolling, long errors cut.
    OutboxMessage.objects.filter(pk=resend.pk).update(last_error="SMTP 451: " + "the server is busy, " * 40)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(shop + "/admin/mailer/outboxmessage/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    results = page.locator("#changelist .results")  # Django's admin scrolls a wide table inside this box
    assert results.evaluate("box => box.scrollWidth <= box.clientWidth")
    screenshot(page, "admin-outbox")

    page.goto(shop + "/admin/")
    page.get_by_role("link", name="Django-RQ", exact=True).click()
    expect(page).to_have_url(f"{shop}/admin/django_rq/dashboard/")
    expect(page.locator("#content")).to_contain_text("default")


def test_the_index_opens_on_the_days_summary_and_the_dashboard_names_the_running_scheduler(formation, context):
    """As staff see it after logging in, at 1280 and 390 px: the summary above the shop's apps,
    each figure a link to its list; django-rq's dashboard lists the scheduler process started
    from the Procfile (it said "No running cron schedulers" while rq-scheduler ran)."""
    web = formation.start("web")
    scheduler = formation.start("scheduler")
    shop = f"http://127.0.0.1:{web.env['PORT']}"
    factories.staff_user(username="staff", superuser=True)
    factories.order(product=factories.product(sku="last-mugs", name="Last mugs", stock=3))  # pending: no worker here

    page = context.new_page()
    page.goto(shop + "/admin/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(factories.STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#shop-summary")).to_be_visible()
    expect(page.locator("#summary-placed")).to_have_text("1")
    expect(page.locator("#summary-pending")).to_have_text("1")
    expect(page.locator("#summary-low-stock")).to_have_text("1")
    # The summary and the shop's apps come before the rest, in reading order.
    modules = page.locator("#content-main > div.module").all()
    ids = [module.get_attribute("id") or module.get_attribute("class") for module in modules]
    assert ids[:3] == ["shop-summary", "app-orders module", "app-mailer module"], ids
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 844})
        assert_accessible(page)
        screenshot(page, f"admin-index-{width}")
    page.get_by_role("link", name="1", exact=True).and_(page.locator("#summary-low-stock")).click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)

    page.goto(shop + "/admin/django_rq/dashboard/")
    state = page.locator("#rq-scheduler-state")
    expect(state).to_contain_text("1 running")
    name = page.locator("#rq-scheduler .instance")
    expect(name).to_have_text(re.compile(rf"\.{scheduler.pid}\.1$"))
    expect(page.locator("#content")).not_to_contain_text("No running cron schedulers")
    page.set_viewport_size({"width": 1280, "height": 800})
    assert_accessible(page)
    screenshot(page, "admin-rq-dashboard")


def test_staff_mark_an_order_shipped_with_a_double_click_and_add_a_note(shop, context, smtp):
    """In Chromium, as staff would: the shopper gets one "on its way" email with the tracking
    reference however the button is pressed; the note shows in the history, signed."""
    factories.staff_user(username="staff", superuser=True)
    order = factories.order()
    wait_until(lambda: Order.objects.get(pk=order.pk).status == OrderStatus.PAID, deadline=60, message="paid")
    page = context.new_page()
    page.goto(shop + "/admin/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(factories.STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{shop}/admin/orders/order/{order.pk}/change/")
    page.get_by_label("Tracking reference").fill("JD014600006281234567")
    assert_accessible(page)
    page.get_by_role("button", name="Mark shipped and email the shopper").dblclick()
    expect(page.locator(".messagelist")).to_contain_text("Marked shipped; the shopper is emailed.")
    expect(page.locator("#shipped")).to_contain_text("JD014600006281234567")
    page.get_by_label("Internal note (staff only)").fill("Fragile: packed twice.")
    page.get_by_role("button", name="Add note").click()
    expect(page.locator(".messagelist")).to_contain_text("Note added.")
    expect(page.locator("#status_changes-group")).to_contain_text("note: Fragile: packed twice.")
    assert_accessible(page)
    screenshot(page, "admin-order-shipped")
    shipped = OutboxMessage.objects.filter(key=f"order-shipped-{order.pk}")
    wait_until(lambda: shipped.filter(status=OutboxStatus.SENT).exists(), deadline=30, message="the email sent")
    received = [m for m in smtp.messages if m["Subject"].endswith("is on its way")]
    assert len(received) == 1 and "JD014600006281234567" in received[0].get_body(("plain",)).get_content()
