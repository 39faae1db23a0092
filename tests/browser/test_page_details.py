"""The details a shopper notices, in Chromium: the cart's amounts labelled on a phone, the space
before an element inside a link, a skip link first for the keyboard, the out-of-date notice
styled as a notice, and *Place order* saying it is working.

web runs as the Procfile starts it (no worker: nothing here needs an order processed). Each page
is checked with axe-core and photographed into test-artifacts/screenshots/.
"""

import pytest
from playwright.sync_api import expect

from orders.models import Product
from tests.browser.support import assert_accessible, screenshot
from tests.support.databases import ALL_DATABASES

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)]

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def shop(formation):
    """Start web with the demo catalogue's key ring (a name that cannot be put in the plural); return
    the shop's base URL. The demo's own row is there only until a transactional test empties the tables."""
    Product.objects.update_or_create(
        sku="idempotency-key-ring",
        defaults={
            "name": "Idempotency key ring",
            "price": 800,
            "currency": "EUR",
            "stock": 50,
            "is_active": True,
            "image": "products/idempotency-key-ring.svg",
            "image_alt": "A brown key ring with one gold key",
        },
    )
    return f"http://127.0.0.1:{formation.start('web').env['PORT']}"


def to_checkout(page, shop):
    page.goto(shop + "/")
    page.get_by_role("button", name="Add to cart: Idempotency key ring").click()
    page.wait_for_url(shop + "/cart/")
    page.get_by_role("link", name="Checkout").click()
    page.wait_for_url(shop + "/checkout/")
    page.get_by_label("Email").fill("shopper@example.com")


def before(page, selector: str) -> str:
    """Return the ``content`` of ``selector``'s ::before pseudo-element as computed ("none" when absent)."""
    return page.eval_on_selector(selector, "node => getComputedStyle(node, '::before').content")


def test_on_a_phone_each_amount_of_the_cart_says_what_it_is(shop, context):
    page = context.new_page()
    page.set_viewport_size(PHONE)
    page.goto(shop + "/")
    page.get_by_role("button", name="Add to cart: Idempotency key ring").click()
    page.wait_for_url(shop + "/cart/")
    assert before(page, "#unit-price-idempotency-key-ring") == '"Price: "'
    assert before(page, "#line-total-idempotency-key-ring") == '"Total: "'
    expect(page.locator("#line-total-idempotency-key-ring")).to_have_text("€8.00")
    assert_accessible(page)
    screenshot(page, "cart-phone-labels")
    # At 1280 px the columns' headings say it: no label repeats them.
    page.set_viewport_size({"width": 1280, "height": 800})
    assert before(page, "#unit-price-idempotency-key-ring") == "none"


def test_a_link_keeps_the_space_between_its_text_and_an_element_inside_it(shop, context):
    page = context.new_page()
    to_checkout(page, shop)
    page.get_by_role("button", name="Place order").click()
    page.wait_for_url(shop + "/orders/*/")
    page.go_back()  # the checkout, placed: "See order <code>…</code>"
    expect(page.locator("#order-link")).to_be_visible()
    # Every link of the page whose text runs into an element: the distance, in CSS px, between the
    # end of the text before the element (its trailing space included) and the element's left edge.
    gaps = page.evaluate(
        """() => [...document.querySelectorAll('main a')].flatMap(link => [...link.childNodes].flatMap((node, i) => {
              const next = link.childNodes[i + 1];
              if (node.nodeType !== Node.TEXT_NODE || !/\\S\\s+$/.test(node.textContent) || !next
                  || next.nodeType !== Node.ELEMENT_NODE) return [];
              const range = document.createRange();
              range.selectNodeContents(node);
              const rects = range.getClientRects();
              return [[link.id, next.getBoundingClientRect().left - rects[rects.length - 1].right]];
            }))"""
    )
    assert "order-link" in dict(gaps), gaps
    assert all(gap >= 3 for _, gap in gaps), gaps  # a space is ~4 px at this size; run together, 0
    screenshot(page, "checkout-placed-see-order")


def test_the_keyboard_reaches_a_skip_link_first_and_it_moves_focus_to_the_content(shop, context):
    page = context.new_page()
    for path in ("/", "/cart/"):
        page.goto(shop + path)
        page.keyboard.press("Tab")
        skip = page.locator("#skip-link")
        expect(skip).to_be_focused()
        expect(skip).to_have_text("Skip to content")
        box = skip.bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0, box  # on screen once focused
        page.keyboard.press("Enter")
        expect(page.locator("main#content")).to_be_focused()
        page.keyboard.press("Tab")  # the next stop is inside the content, not the header
        assert page.evaluate("document.activeElement.closest('main') !== null")
    page.goto(shop + "/")
    box = page.locator("#skip-link").bounding_box()
    assert box and box["x"] + box["width"] <= 0, box  # off screen until the keyboard reaches it


def test_the_out_of_date_notice_is_shown_as_a_notice(shop, context):
    page = context.new_page()
    to_checkout(page, shop)
    # A token that is not this session's: the checkout answers its "out of date" notice.
    page.eval_on_selector("input[name=token]", "node => { node.value = '00000000-0000-4000-8000-000000000000'; }")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Place order").click()
    assert posted.value.status == 400
    notice = page.locator("#checkout-notice")
    expect(notice).to_contain_text("out of date")
    style = notice.evaluate(
        "node => { const s = getComputedStyle(node); return [s.backgroundColor, s.borderTopWidth, s.paddingLeft]; }"
    )
    assert style[0] not in ("rgba(0, 0, 0, 0)", "transparent") and style[1] != "0px" and style[2] != "0px", style
    assert_accessible(page)
    screenshot(page, "checkout-out-of-date-notice")


def test_place_order_says_it_is_working_until_the_answer_comes(shop, context):
    page = context.new_page()
    to_checkout(page, shop)
    # What the button and the form show between the press and the next page, noted by the page
    # itself (sessionStorage outlives the navigation to the order page).
    page.evaluate(
        """() => new MutationObserver(() => {
              const button = document.getElementById('place-order');
              const busy = document.getElementById('checkout-form').getAttribute('aria-busy');
              sessionStorage.setItem('placing', JSON.stringify([button.textContent, button.disabled, busy]));
            }).observe(document.getElementById('checkout-form'), {attributes: true, childList: true, subtree: true})"""
    )
    page.get_by_role("button", name="Place order").click()
    page.wait_for_url(shop + "/orders/*/")
    assert page.evaluate("JSON.parse(sessionStorage.getItem('placing'))") == ["Placing order…", True, "true"]
    # Back from the order page: the checkout is shown from the back-forward cache or fetched
    # again; either way its button (if it has one) is not left disabled.
    page.go_back()
    for button in page.locator("#place-order").all():
        expect(button).to_be_enabled()
        expect(button).to_have_text("Place order")


def test_the_cart_says_what_was_added_counts_it_in_the_header_and_tells_what_changed(shop, context):
    page = context.new_page()
    page.set_viewport_size(PHONE)
    page.goto(shop + "/")
    expect(page.locator("#cart-count")).to_have_count(0)
    page.get_by_role("button", name="Add to cart: Idempotency key ring").click()
    page.wait_for_url(shop + "/cart/")
    expect(page.locator("#messages")).to_have_text("Added Idempotency key ring to your cart.")
    expect(page.locator("#cart-count")).to_have_text("1")
    expect(page.get_by_role("link", name="Cart 1 item")).to_be_visible()
    assert_accessible(page)
    screenshot(page, "cart-added-phone")

    # Staff change the price and the stock while the shopper looks elsewhere.
    Product.objects.filter(sku="idempotency-key-ring").update(price=900, stock=0)
    page.goto(shop + "/cart/")
    notices = page.locator("#cart-notices li")
    expect(notices).to_have_text(
        [
            "The price of Idempotency key ring is now €9.00 (it was €8.00).",
            "Idempotency key ring is sold out: remove it to place your order.",
        ]
    )
    expect(page.locator("#line-total-idempotency-key-ring")).to_have_text("€9.00")
    expect(page.locator("#cart-total")).to_have_text("€9.00")
    page.set_viewport_size({"width": 1280, "height": 800})
    assert_accessible(page)
    screenshot(page, "cart-notices")


def test_the_product_page_shows_its_picture_its_stock_and_a_quantity_to_add(shop, context):
    page = context.new_page()
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(shop + "/products/idempotency-key-ring/")
        picture = page.get_by_role("img", name="A brown key ring with one gold key")
        expect(picture).to_be_visible()
        assert picture.evaluate("img => img.complete && img.naturalWidth > 0")  # loaded, not a broken icon
        box = picture.bounding_box()
        assert box and box["width"] <= width and abs(box["width"] / box["height"] - 480 / 360) < 0.02, box
        expect(page.locator("#stock-idempotency-key-ring")).to_have_text("In stock")
        assert_accessible(page)
        screenshot(page, f"product-page-{width}")
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart: Idempotency key ring").click()
    page.wait_for_url(shop + "/cart/")
    expect(page.locator("#cart-quantity-idempotency-key-ring")).to_have_value("2")
    expect(page.locator("#messages")).to_have_text("Added 2 × Idempotency key ring to your cart.")
