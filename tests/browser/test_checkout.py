"""The checkout in a real browser (Debian's Chromium through Playwright) against the real formation.

web, worker and mailer run as the Procfile starts them, with the test SMTP recorder: what the
shopper does with Back, reload and a second tab ends in exactly one order, one charge, one email.
"""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from embedded.polling import wait_until
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order, OrderStatus, SandboxCharge
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]


@pytest.fixture
def shop(formation):
    """Start web, worker and mailer; return the shop's base URL."""
    factories.product()
    web = formation.start("web")
    formation.start("worker")
    formation.start("mailer")
    return f"http://127.0.0.1:{web.env['PORT']}"


def settled():
    """True once every order is processed and every outbox message is sent or failed."""
    orders = Order.objects.exists() and not Order.objects.filter(status=OrderStatus.PENDING).exists()
    return orders and not OutboxMessage.objects.exclude(status__in=[OutboxStatus.SENT, OutboxStatus.FAILED]).exists()


def buy(page, shop):
    """From the catalogue: Add to cart (a POST form), then the cart's Checkout link."""
    page.goto(shop + "/")
    with page.expect_response(lambda r: r.request.method == "POST") as added:
        page.get_by_role("button", name="Add to cart: Procfile mug").click()
    assert added.value.status == 303
    page.wait_for_url(shop + "/cart/")
    page.get_by_role("link", name="Checkout").click()
    page.wait_for_url(shop + "/checkout/")


def place_order(page, shop, *, email="shopper@example.com"):
    """Fill the checkout page and press Place order; return the POST's response."""
    page.get_by_label("Email").fill(email)
    with page.expect_response(lambda r: r.url == shop + "/checkout/" and r.request.method == "POST") as posted:
        page.get_by_role("button", name="Place order").click()
    page.wait_for_load_state()
    return posted.value


def test_back_after_placing_the_order_shows_it_and_places_no_second_one(shop, context, smtp):
    """The issue's sequence: catalogue, Buy, checkout, Place order, order page, Back, (Place order).

    The page after Back links to the order; had it shown a form, pressing Place order on it must
    make no other order. (Before the fix, Chromium fetched the page again and restored the old
    token into its hidden field, so the form made no second order here, but Back showed a form
    for a checkout already placed; the HTTP tests show the second order a fresh token made.)
    """
    page = context.new_page()
    buy(page, shop)
    assert place_order(page, shop).status == 303
    page.wait_for_url(shop + "/orders/*/")
    first = urlsplit(page.url).path
    # The shopper reads the order page until it says paid (it updates itself while pending). Not
    # wait_for_function: its string is evaluated in the page, which the Content-Security-Policy forbids.
    expect(page.locator("#order-status")).to_have_text("paid")
    page.go_back()
    page.wait_for_load_state()
    after_back = page.locator("#order-link")
    if page.get_by_role("button", name="Place order").count():  # a form came back: press it, as the shopper did
        place_order(page, shop)
        page.go_back()
    wait_until(settled, deadline=60, message="the orders to be paid and their confirmations sent")
    assert (Order.objects.count(), SandboxCharge.objects.count(), len(smtp.messages)) == (1, 1, 1)
    assert after_back.get_attribute("href") == first


def test_a_second_tab_with_another_quantity_after_the_first_placed_the_order_is_a_409(shop, context):
    """A second tab showing the same checkout page, its lines carrying another quantity (as a page
    restored from an earlier cart would) and another email: the same token, other contents."""
    first_tab = context.new_page()
    buy(first_tab, shop)
    second_tab = context.new_page()
    second_tab.goto(first_tab.url)  # the same shopper's checkout page, open in a second tab

    assert place_order(first_tab, shop).status == 303
    first_tab.wait_for_url(shop + "/orders/*/")
    second_tab.locator("input[name='lines-0-quantity']").evaluate("input => { input.value = '2'; }")
    response = place_order(second_tab, shop, email="other@example.com")
    assert response.status == 409
    assert second_tab.locator("#order-link").get_attribute("href") == urlsplit(first_tab.url).path
    assert Order.objects.count() == 1
    order = Order.objects.get()
    assert (order.email, [line.quantity for line in order.lines.all()]) == ("shopper@example.com", [1])


def test_reloading_a_completed_checkout_shows_the_order_and_buying_again_starts_anew(shop, context):
    page = context.new_page()
    buy(page, shop)
    place_order(page, shop)
    page.wait_for_url(shop + "/orders/*/")
    order_path = urlsplit(page.url).path
    page.goto(shop + "/checkout/")
    for _ in range(2):
        assert page.locator("#order-link").get_attribute("href") == order_path
        assert page.get_by_role("button", name="Place order").count() == 0
        page.reload()
    assert Order.objects.count() == 1
    # Buying again starts again from the catalogue: a new checkout, a new order.
    buy(page, shop)
    assert place_order(page, shop).status == 303
    page.wait_for_url(shop + "/orders/*/")
    assert urlsplit(page.url).path != order_path
    assert Order.objects.count() == 2


def test_an_international_address_typed_in_chromium_is_shown_as_typed(shop, context, smtp):
    """The email box sends what was typed (a text field: Chromium would map an email field's
    domain itself); the order page shows it as typed, and the mail goes to the punycode domain."""
    page = context.new_page()
    buy(page, shop)
    place_order(page, shop, email="zoe@bücher.example")
    page.wait_for_url(shop + "/orders/*/")
    expect(page.locator("#order-confirmation")).to_have_attribute("data-state", "sent")
    # The page updated itself while the order was processed: the sentence arrives as text, so the
    # element carrying the address is #order-confirmation itself.
    expect(page.locator("#order-confirmation")).to_have_text("A confirmation was sent to zoe@bücher.example.")
    assert [message["To"] for message in smtp.messages] == ["zoe@xn--bcher-kva.example"]


def test_a_domain_that_idna_2003_maps_elsewhere_is_refused_as_typed_in_chromium(shop, context, smtp):
    """zoe@straße.de typed in Chromium reaches the shop as typed and is refused with the field's
    message, the box keeping what was typed; nothing is ordered, charged or mailed. (In an
    ``<input type="email">`` Chromium posted zoe@strasse.de, which was paid and mailed there.)"""
    page = context.new_page()
    buy(page, shop)
    posted = place_order(page, shop, email="zoe@straße.de")
    assert posted.status == 400
    assert "straße.de" in posted.request.post_data_json["email"]
    expect(page.locator("#id_email-error")).to_contain_text("contains ß")
    expect(page.get_by_label("Email")).to_have_value("zoe@straße.de")
    assert page.get_by_label("Email").get_attribute("autocomplete") == "email"
    assert Order.objects.count() == 0
    assert smtp.messages == []
