"""The order page in Chromium against the real formation: it follows the order without reloading,
announces each change to screen readers, falls back to a refresh without JavaScript, says why a
payment failed in the shopper's words, and passes axe; the storefront is usable on a phone."""

import pytest
from playwright.sync_api import expect

from orders.models import PaymentMethod, SandboxCharge
from tests import factories
from tests.browser.support import assert_accessible, screenshot
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

# Milliseconds to wait for what a process does (start, pick up a job, send a message) to reach the page.
PROCESS_DEADLINE = 30_000


def base_url(web) -> str:
    return f"http://127.0.0.1:{web.env['PORT']}"


def test_the_order_page_follows_the_order_to_paid_and_sent_without_reloading(formation, context):
    web = formation.start("web")
    order = factories.order(quantity=2)
    page = context.new_page()
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    page.goto(f"{base_url(web)}/orders/{order.pk}/")
    expect(page.locator("#order-status")).to_have_text("pending")
    expect(page.locator("#order-label")).to_have_text("Order received: taking payment…")
    assert_accessible(page)
    screenshot(page, "order-pending")
    # A property of this document: a reload or a navigation would lose it.
    page.evaluate("window.sameDocument = true")

    formation.start("worker")
    expect(page.locator("#order-status")).to_have_text("paid", timeout=PROCESS_DEADLINE)
    expect(page.locator("#order-announcement")).to_have_text("Paid: sending your confirmation email…")
    expect(page.locator("#order-steps [data-step=paid]")).to_have_class("done")
    assert_accessible(page)
    screenshot(page, "order-paid")

    formation.start("mailer")
    expect(page.locator("#order-steps [data-step=confirmation_sent]")).to_have_class("done", timeout=PROCESS_DEADLINE)
    expect(page.locator("#order-announcement")).to_have_text("Paid. Your confirmation email was sent.")
    expect(page.locator("#order-confirmation")).to_have_text("A confirmation was sent to shopper@example.com.")
    expect(page.locator("#order-slow")).to_be_hidden()
    assert page.evaluate("window.sameDocument") is True
    assert len(navigations) == 1, navigations  # the first load only


def test_without_javascript_the_order_page_refreshes_until_paid(formation, context):
    web = formation.start("web")
    order = factories.order(quantity=2)
    no_script = context.browser.new_context(java_script_enabled=False)
    try:
        page = no_script.new_page()
        page.goto(f"{base_url(web)}/orders/{order.pk}/")
        expect(page.locator("#order-status")).to_have_text("pending")
        formation.start("worker")
        expect(page.locator("#order-status")).to_have_text("paid", timeout=PROCESS_DEADLINE)
        expect(page.locator("#order-label")).to_have_text("Paid: sending your confirmation email…")
    finally:
        no_script.close()


def test_the_order_page_stops_polling_after_the_wait_and_says_it_takes_longer(formation, context):
    # No worker: the order stays pending. The wait counts from the order's creation, so it leaves room
    # for a slow page load (a loaded CI machine took over 4 s and the page never polled at all).
    web = formation.start("web", ORDER_PAGE_WAIT_SECONDS="8")
    order = factories.order(quantity=2)
    page = context.new_page()
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "status.json" in request.url else None)
    page.goto(f"{base_url(web)}/orders/{order.pk}/")
    expect(page.locator("#order-slow")).to_be_hidden()
    expect(page.locator("#order-slow")).to_be_visible(timeout=15_000)
    expect(page.locator("#order-slow")).to_contain_text("This is taking longer than usual.")
    assert polls, "the page never asked for its order's status"
    asked = len(polls)
    # Two more poll intervals (2 s each) pass without a request: it stopped. Nothing to wait for but time.
    page.wait_for_timeout(4_500)
    assert len(polls) == asked
    expect(page.locator("#order-status")).to_have_text("pending")


def test_a_declined_order_shows_the_reason_in_the_shoppers_words(formation, context):
    web = formation.start("web")
    formation.start("worker")
    formation.start("mailer")
    order = factories.order(quantity=2, payment_method=PaymentMethod.DECLINED)
    page = context.new_page()
    page.goto(f"{base_url(web)}/orders/{order.pk}/")
    expect(page.locator("#order-status")).to_have_text("failed", timeout=PROCESS_DEADLINE)
    expect(page.locator("#order-label")).to_have_text("Payment failed: Your card was declined.")
    expect(page.locator("#order-confirmation")).to_have_text(
        "Nothing was charged. A notice was sent to shopper@example.com.", timeout=PROCESS_DEADLINE
    )
    assert "card_declined" not in page.content()
    assert_accessible(page)
    screenshot(page, "order-failed")


def assert_fits_a_phone(page) -> None:
    """No sideways scroll at the page's width, tap targets at least 44 px tall, prices on one line."""
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{page.url} scrolls sideways"
    targets = page.locator("header a, nav a, main a, button")
    assert targets.count() > 0
    for index in range(targets.count()):
        box = targets.nth(index).bounding_box()
        assert box["height"] >= 44, f"{targets.nth(index).inner_text()!r} is {box['height']} px tall"
    prices = page.locator(".price")
    assert prices.count() > 0
    for index in range(prices.count()):
        lines = prices.nth(index).evaluate(
            "element => { const range = document.createRange(); range.selectNodeContents(element);"
            " return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size; }"
        )
        assert lines == 1, f"price {prices.nth(index).inner_text()!r} wraps onto {lines} lines"
    assert_accessible(page)


def test_the_storefront_is_usable_on_a_phone(formation, context):
    factories.product()
    factories.product(sku="formation-shirt", name="Formation shirt", price=2550)
    web = formation.start("web")
    phone = context.browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        page.goto(base_url(web) + "/")
        expect(page.locator("header nav")).to_be_visible()
        assert_fits_a_phone(page)
        screenshot(page, "storefront-phone")

        page.get_by_role("link", name="Procfile mug").click()
        expect(page.locator("#product-name")).to_have_text("Procfile mug")
        assert_fits_a_phone(page)
        page.get_by_role("button", name="Add to cart: Procfile mug").click()
        page.wait_for_url(base_url(web) + "/cart/")
        page.goto(base_url(web) + "/products/formation-shirt/")
        page.get_by_role("button", name="Add to cart: Formation shirt").click()
        page.wait_for_url(base_url(web) + "/cart/")
        expect(page.locator("#cart-total")).to_have_text("€37.50")
        assert_fits_a_phone(page)
        screenshot(page, "cart-phone")

        page.get_by_role("link", name="Checkout").click()
        page.wait_for_url(base_url(web) + "/checkout/")
        assert_fits_a_phone(page)
    finally:
        phone.close()


def test_a_declined_card_then_a_good_one_pays_the_same_order_once(formation, context, smtp):
    """The shopper watches the decline arrive (the page offers to pay again without a reload),
    pays again with the card that succeeds, and the page follows the new attempt to paid; one
    charge, the declined attempt took nothing, at 390 and 1280 px without an axe violation."""
    web = formation.start("web")
    formation.start("worker")
    formation.start("mailer")
    order = factories.order(payment_method=PaymentMethod.DECLINED)
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base_url(web)}/orders/{order.pk}/")
    expect(page.locator("#order-status")).to_have_text("failed", timeout=PROCESS_DEADLINE)
    pay_again = page.locator("#pay-again")
    expect(pay_again).to_be_visible()
    expect(page.get_by_label("Test Visa (succeeds)")).to_be_checked()
    assert_accessible(page)
    screenshot(page, "order-declined-pay-again-phone")
    page.set_viewport_size({"width": 1280, "height": 800})
    assert_accessible(page)
    with page.expect_navigation():
        page.get_by_role("button", name="Pay again").click()
    expect(page.locator("#messages")).to_have_text("Paying again: this page follows the new payment.")
    expect(page.locator("#order-status")).to_have_text("paid", timeout=PROCESS_DEADLINE)
    expect(pay_again).to_be_hidden()
    expect(page.locator("#order-confirmation")).to_have_text(
        "A confirmation was sent to shopper@example.com.", timeout=PROCESS_DEADLINE
    )
    assert_accessible(page)
    screenshot(page, "order-paid-after-decline")
    order.refresh_from_db()
    assert order.status == "paid" and order.charge.amount == order.total
    outcomes = sorted(SandboxCharge.objects.values_list("outcome", flat=True))
    assert outcomes == ["declined", "succeeded"]
