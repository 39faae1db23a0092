"""The storefront in Chromium against the real formation: cart, checkout, errors, the last item.

web, worker and mailer run as the Procfile starts them. Each page the shopper sees is checked with
axe-core (no serious or critical violation) and photographed into test-artifacts/screenshots/.
"""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from orders.models import Order, Product
from tests import factories
from tests.browser.support import assert_accessible, screenshot
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

SOLD_OUT = "Procfile mug is sold out. Change your cart and place the order again."


@pytest.fixture
def shop(formation):
    """Start web, worker and mailer with two products; return the shop's base URL."""
    factories.product()
    factories.product(sku="formation-shirt", name="Formation shirt", price=2550)
    web = formation.start("web")
    formation.start("worker")
    formation.start("mailer")
    return f"http://127.0.0.1:{web.env['PORT']}"


def add_to_cart(page, shop, name):
    page.goto(shop + "/")
    page.get_by_role("button", name=f"Add to cart: {name}").click()
    page.wait_for_url(shop + "/cart/")


def to_checkout(page, shop, email="shopper@example.com"):
    page.goto(shop + "/cart/")
    page.get_by_role("link", name="Checkout").click()
    page.wait_for_url(shop + "/checkout/")
    page.get_by_label("Email").fill(email)


def test_a_shopper_fills_the_cart_changes_it_and_places_the_order(shop, context):
    page = context.new_page()
    page.goto(shop + "/")
    expect(page.get_by_role("link", name="Procfile mug")).to_be_visible()  # product names are the links
    assert_accessible(page)
    screenshot(page, "storefront")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "storefront-phone")
    page.set_viewport_size({"width": 1280, "height": 800})

    add_to_cart(page, shop, "Procfile mug")
    add_to_cart(page, shop, "Formation shirt")
    expect(page.locator("#cart-total")).to_have_text("€37.50")
    page.get_by_label("Quantity of Procfile mug").fill("3")
    page.get_by_role("button", name="Update Procfile mug").click()
    expect(page.locator("#line-total-procfile-mug")).to_have_text("€36.00")
    expect(page.locator("#cart-total")).to_have_text("€61.50")
    page.reload()  # the cart lives in the session
    expect(page.get_by_label("Quantity of Procfile mug")).to_have_value("3")
    assert_accessible(page)
    screenshot(page, "cart")
    page.get_by_role("button", name="Remove Formation shirt").click()
    expect(page.locator("#line-formation-shirt")).to_have_count(0)
    expect(page.locator("#cart-total")).to_have_text("€36.00")
    add_to_cart(page, shop, "Formation shirt")

    to_checkout(page, shop)
    expect(page.locator("#checkout-total")).to_have_text("€61.50")
    assert_accessible(page)
    page.get_by_role("button", name="Place order").click()
    page.wait_for_url(shop + "/orders/*/")
    order = Order.objects.get()
    assert urlsplit(page.url).path == f"/orders/{order.pk}/"
    assert sorted(order.lines.values_list("product__sku", "quantity")) == [("formation-shirt", 1), ("procfile-mug", 3)]
    assert order.total == 6150
    # The order page follows the order to paid and its confirmation sent, without a reload: a
    # property of this document would not survive one.
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#order-status")).to_have_text("paid", timeout=30_000)
    expect(page.locator("#order-steps [data-step=confirmation_sent]")).to_have_class("done", timeout=30_000)
    assert page.evaluate("window.sameDocument") is True
    page.goto(shop + "/cart/")
    expect(page.locator("#cart-empty")).to_have_text("Your cart is empty.")
    assert Product.objects.get(sku="procfile-mug").stock == 97


def test_a_double_click_on_place_order_makes_one_order(shop, context):
    page = context.new_page()
    add_to_cart(page, shop, "Procfile mug")
    to_checkout(page, shop)
    page.get_by_role("button", name="Place order").dblclick()
    page.wait_for_url(shop + "/orders/*/")
    assert Order.objects.count() == 1
    assert urlsplit(page.url).path == f"/orders/{Order.objects.get().pk}/"


def test_bad_input_shows_field_errors_with_focus_on_the_summary_linked_to_the_fields(shop, context):
    page = context.new_page()
    add_to_cart(page, shop, "Procfile mug")
    to_checkout(page, shop, email="not-an-email")
    page.get_by_role("button", name="Place order").click()
    page.wait_for_load_state()
    summary = page.locator("#error-summary")
    expect(summary).to_be_focused()
    assert page.evaluate("document.activeElement.id") == "error-summary"
    email = page.get_by_label("Email")
    expect(email).to_have_value("not-an-email")  # the input is kept
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_accessible_description("Error: Enter an email address like name@example.com.")
    assert_accessible(page)
    screenshot(page, "checkout-errors")
    summary.get_by_role("link", name="Enter an email address like name@example.com.").click()
    assert urlsplit(page.url).fragment == "id_email"
    assert page.evaluate("document.querySelector(':target') === document.getElementById('id_email')")
    email.fill("shopper@example.com")
    page.get_by_role("button", name="Place order").click()
    page.wait_for_url(shop + "/orders/*/")
    assert Order.objects.count() == 1


def test_the_last_item_bought_by_two_browsers_at_once_makes_one_order_and_one_sold_out_message(shop, context):
    Product.objects.filter(sku="procfile-mug").update(stock=1)
    other = context.browser.new_context()
    other.set_default_timeout(15_000)
    pages = [context.new_page(), other.new_page()]
    for index, page in enumerate(pages):
        add_to_cart(page, shop, "Procfile mug")
        to_checkout(page, shop, email=f"shopper{index}@example.com")
    for page in pages:  # both submissions leave before either answer arrives
        page.get_by_role("button", name="Place order").click(no_wait_after=True)
    for page in pages:
        page.wait_for_function("document.querySelector('#order-status, #error-summary') !== null")
    placed = [page for page in pages if "/orders/" in page.url]
    refused = [page for page in pages if "/orders/" not in page.url]
    assert (len(placed), len(refused)) == (1, 1)
    expect(refused[0].locator("#error-summary .error-link")).to_have_text(SOLD_OUT)
    expect(refused[0].locator("#error-summary")).to_be_focused()
    assert Order.objects.count() == 1
    assert Product.objects.get(sku="procfile-mug").stock == 0
    other.close()
