"""The cart over HTTP: add from the catalogue (POST), change quantities, remove, a running total."""

import re
import threading
import uuid
from http.cookies import SimpleCookie
from importlib import import_module

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from embedded.shopper import cart_fill, checkout_data, element, hidden, page_lines
from orders.cart import cart_add, cart_contents, cart_remove, cart_set_quantity
from orders.checkout import checkout_complete
from orders.models import MAX_LINE_QUANTITY, MAX_LINES, Order, Product
from orders.services import LineRequest
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.fixture
def browser():
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def shirt(db):
    return factories.product(sku="shirt", name="Formation shirt", price=2550)


def post(browser, path, **data):
    token = hidden("csrfmiddlewaretoken", browser.get("/").content.decode())
    return browser.post(path, {**data, "csrfmiddlewaretoken": token})


def test_lines_quantities_and_the_running_total(browser, product, shirt):
    assert post(browser, "/cart/add/", product="procfile-mug")["Location"] == "/cart/"
    post(browser, "/cart/add/", product="shirt")
    post(browser, "/cart/add/", product="procfile-mug")  # again: the same line, one more
    page = browser.get("/cart/").content.decode()
    assert element(page, "#cart-quantity-procfile-mug").attrs["value"] == "2"
    assert element(page, "#line-total-procfile-mug").text == "€24.00"
    assert element(page, "#unit-price-shirt").text == "€25.50"
    assert element(page, "#cart-total").text == "€49.50"

    assert post(browser, "/cart/update/", product="shirt", quantity="3").status_code == 303
    assert element(browser.get("/cart/").content.decode(), "#cart-total").text == "€100.50"
    assert post(browser, "/cart/remove/", product="procfile-mug").status_code == 303
    page = browser.get("/cart/").content.decode()  # a reload: the session keeps it
    assert 'id="line-procfile-mug"' not in page
    assert element(page, "#cart-total").text == "€76.50"
    assert post(browser, "/cart/update/", product="shirt", quantity="0").status_code == 303  # 0 removes
    assert element(browser.get("/cart/").content.decode(), "#cart-empty").text == "Your cart is empty."


def test_each_control_is_named_after_its_product(browser, product):
    cart_fill(browser)
    page = browser.get("/cart/").content.decode()
    label = element(page, "[for=cart-quantity-procfile-mug]")
    assert label.text == "Quantity of Procfile mug"
    assert element(page, "#update-procfile-mug").attrs["aria-label"] == "Update Procfile mug"
    assert element(page, "#remove-procfile-mug").attrs["aria-label"] == "Remove Procfile mug"
    assert element(page, "#checkout-link").attrs["href"] == "/checkout/"


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("two", "Enter a whole number from 0 to 99 (0 removes the product)."),
        ("-1", "Enter a whole number from 0 to 99 (0 removes the product)."),
        ("", "Enter a quantity from 0 to 99 (0 removes the product)."),
        ("100", f"You can order at most {MAX_LINE_QUANTITY} of one product."),
        ("9" * 5000, "Enter a whole number from 0 to 99 (0 removes the product)."),
        ("99", "Only 10 left of Procfile mug."),
    ],
)
def test_a_bad_quantity_is_a_400_next_to_its_field_naming_what_was_typed(browser, quantity, message):
    """The box shows what the cart holds, so that it, the line's total and the cart's total agree;
    the message says what was typed (cut to 12 characters)."""
    factories.product(stock=10)
    cart_fill(browser, [("procfile-mug", 2)])
    response = post(browser, "/cart/update/", product="procfile-mug", quantity=quantity)
    assert response.status_code == 400
    html = response.content.decode()
    typed = quantity if len(quantity) <= 12 else quantity[:12] + "…"
    said = f"{message} You typed “{typed}”; your cart still has 2."
    link = element(html, "#error-summary .error-link")
    assert (link.text, link.attrs["href"]) == (said, "#cart-quantity-procfile-mug")
    assert element(html, "#cart-quantity-procfile-mug-error").text == f"Error: {said}"
    field = element(html, "#cart-quantity-procfile-mug")
    assert field.attrs["aria-invalid"] == "true"
    assert field.attrs["aria-describedby"] == "cart-quantity-procfile-mug-error"
    assert field.attrs["value"] == "2"
    assert element(html, "#line-total-procfile-mug").text == element(html, "#cart-total").text == "€24.00"
    assert page_lines_in_cart(browser) == [("procfile-mug", 2)]  # unchanged


def page_lines_in_cart(browser):
    return page_lines(browser.get("/checkout/").content.decode())


def test_adding_more_than_the_stock_is_refused_naming_the_product(browser):
    factories.product(stock=1)
    cart_fill(browser)
    response = post(browser, "/cart/add/", product="procfile-mug")
    assert response.status_code == 400
    assert element(response.content.decode(), "#error-summary .error-link").text == "Only 1 left of Procfile mug."
    assert page_lines_in_cart(browser) == [("procfile-mug", 1)]


def test_placing_the_order_empties_the_cart_and_a_changed_cart_makes_a_new_checkout(browser, product, shirt):
    cart_fill(browser, [("procfile-mug", 1)])
    page = browser.get("/checkout/").content.decode()
    old = {"token": hidden("token", page), "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
    cart_fill(browser, [("shirt", 1)])  # in another tab, after the checkout page was shown
    stale = browser.post("/checkout/", {**checkout_data(token=old["token"]), **old})
    assert stale.status_code == 400
    html = stale.content.decode()
    assert element(html, "#checkout-notice").text == (
        "This checkout page is out of date; your cart is unchanged — review it and place the order again."
    )
    assert page_lines(html) == [("procfile-mug", 1), ("shirt", 1)]
    form = {
        **checkout_data(token=hidden("token", html), lines=page_lines(html)),
        "csrfmiddlewaretoken": old["csrfmiddlewaretoken"],
    }
    assert browser.post("/checkout/", form).status_code == 303
    assert element(browser.get("/cart/").content.decode(), "#cart-empty").text == "Your cart is empty."


def test_updating_a_line_removed_in_another_tab_says_so(browser, product):
    cart_fill(browser)
    post(browser, "/cart/remove/", product="procfile-mug")
    response = post(browser, "/cart/update/", product="procfile-mug", quantity="2")
    assert response.status_code == 400
    html = response.content.decode()
    assert element(html, "#error-summary .error-item").text == "Procfile mug is not in your cart any more."
    assert element(html, "#cart-empty").text == "Your cart is empty."


def test_a_products_name_links_to_its_page_with_its_price_and_add_to_cart(browser, product):
    catalogue = browser.get("/").content.decode()
    assert element(catalogue, "#name-procfile-mug").attrs["href"] == "/products/procfile-mug/"
    response = browser.get("/products/procfile-mug/")
    assert response.status_code == 200
    page = response.content.decode()
    assert element(page, "#product-name").text == "Procfile mug"
    assert element(page, "#price-procfile-mug").text == "€12.00"
    assert hidden("product", page) == "procfile-mug"  # what its Add to cart form sends
    assert element(page, "#add-procfile-mug").text == "Add to cart"


def test_an_unknown_or_inactive_products_page_is_a_404(browser, product):
    assert browser.get("/products/no-such-thing/").status_code == 404
    Product.objects.filter(pk=product.pk).update(is_active=False)
    assert browser.get("/products/procfile-mug/").status_code == 404


@pytest.mark.parametrize("value", ["\x00", "procfile-mug\x00", "x" * 10_000])
@pytest.mark.parametrize("path", ["/cart/add/", "/checkout/start/"])
def test_a_product_value_postgresql_cannot_store_is_a_400_not_a_500(browser, product, path, value):
    response = post(browser, path, product=value)
    assert response.status_code == 400
    assert element(response.content.decode(), "#error-summary").tag


# Overlapping requests of one shopper: Django saves a whole session, the later save would win.


def _post_concurrently(cookies, posts):
    """POST each ``(path, data)`` from its own client sharing ``cookies``, all at once; return the status codes."""
    barrier = threading.Barrier(len(posts))
    codes = [None] * len(posts)

    def submit(index, path, data):
        client = Client()
        client.cookies = SimpleCookie(cookies.output(header=""))
        try:
            barrier.wait(timeout=10)
            codes[index] = client.post(path, data).status_code
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(index, *post)) for index, post in enumerate(posts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return codes


def _cart_quantities(browser) -> dict[str, int]:
    """Return the cart page's ``{sku: quantity}``."""
    page = browser.get("/cart/").content.decode()
    skus = re.findall(r'id="cart-quantity-([^"]+)"', page)
    return {sku: int(element(page, f"#cart-quantity-{sku}").attrs["value"]) for sku in skus}


@pytest.mark.parametrize("run", range(3))
def test_concurrent_adds_of_different_products_are_all_kept(browser, product, run):
    skus = [factories.product(sku=f"cup-{n}", name=f"Cup {n}", price=100).sku for n in range(8)]
    cart_fill(browser)
    codes = _post_concurrently(browser.cookies, [("/cart/add/", {"product": sku}) for sku in skus])
    assert codes == [303] * 8
    assert _cart_quantities(browser) == {"procfile-mug": 1, **{sku: 1 for sku in skus}}


@pytest.mark.parametrize("run", range(3))
def test_concurrent_adds_of_one_product_all_count(browser, product, run):
    cart_fill(browser)
    codes = _post_concurrently(browser.cookies, [("/cart/add/", {"product": "procfile-mug"})] * 8)
    assert codes == [303] * 8
    assert _cart_quantities(browser) == {"procfile-mug": 9}


def test_concurrent_updates_removals_and_adds_all_apply(browser, product, shirt):
    cup = factories.product(sku="cup", name="Cup", price=100)
    cart_fill(browser, [("procfile-mug", 1), ("shirt", 1)])
    posts = [
        ("/cart/update/", {"product": "procfile-mug", "quantity": "3"}),
        ("/cart/remove/", {"product": "shirt"}),
        ("/cart/add/", {"product": cup.sku}),
    ]
    assert _post_concurrently(browser.cookies, posts) == [303, 303, 303]
    assert _cart_quantities(browser) == {"procfile-mug": 3, "cup": 1}


@pytest.mark.parametrize("run", range(5))
def test_an_add_overlapping_the_order_stays_in_the_cart(browser, product, shirt, run):
    cart_fill(browser)
    page = browser.get("/checkout/").content.decode()
    form = checkout_data(token=hidden("token", page), lines=page_lines(page))
    codes = _post_concurrently(browser.cookies, [("/checkout/", form), ("/cart/add/", {"product": "shirt"})])
    assert codes[1] == 303
    if codes[0] == 303:  # placed before the add: the order took the mug, the shirt stays
        assert Order.objects.get().lines.get().product.sku == "procfile-mug"
        assert _cart_quantities(browser) == {"shirt": 1}
    else:  # the add came first: that checkout page is out of date, nothing is lost either
        assert codes[0] == 400
        assert Order.objects.count() == 0
        assert _cart_quantities(browser) == {"procfile-mug": 1, "shirt": 1}


# The cart's limit counts the products it keeps, also those not on sale for now.


def test_a_product_off_sale_for_a_while_still_counts_towards_the_limit(browser, product):
    skus = [factories.product(sku=f"cup-{n}", name=f"Cup {n}", price=100).sku for n in range(MAX_LINES + 1)]
    cart_fill(browser, [(sku, 1) for sku in skus[:MAX_LINES]])
    Product.objects.filter(sku=skus[0]).update(is_active=False)
    refused = post(browser, "/cart/add/", product=skus[-1])
    assert refused.status_code == 400
    assert element(refused.content.decode(), "#error-summary .error-item").text == (
        f"Your cart holds at most {MAX_LINES} different products, 1 of them not on sale at the moment: "
        "place this order first."
    )
    Product.objects.filter(sku=skus[0]).update(is_active=True)
    assert len(_cart_quantities(browser)) == MAX_LINES
    page = browser.get("/checkout/").content.decode()
    form = checkout_data(token=hidden("token", page), lines=page_lines(page))
    form["csrfmiddlewaretoken"] = hidden("csrfmiddlewaretoken", page)
    assert browser.post("/checkout/", form).status_code == 303
    assert Order.objects.get().lines.count() == MAX_LINES


def _two_requests(browser):
    """Return two session stores of ``browser``'s session, as two overlapping requests load it."""
    engine = import_module(settings.SESSION_ENGINE)
    key = browser.cookies[settings.SESSION_COOKIE_NAME].value
    return engine.SessionStore(key), engine.SessionStore(key)


def test_an_add_while_the_order_is_placed_stays_in_the_cart(browser, product, shirt):
    cart_fill(browser)
    token = uuid.UUID(hidden("token", browser.get("/checkout/").content.decode()))
    placing, adding = _two_requests(browser)
    assert cart_contents(session=placing) == (("procfile-mug", 1),)  # the checkout has read the cart
    cart_add(session=adding, product=shirt)
    adding.save()
    lines = [LineRequest(product_id=product.pk, quantity=1)]
    checkout_complete(session=placing, token=token, email="a@example.com", payment_method="pm_card_visa", lines=lines)
    placing.save()
    assert Order.objects.get().lines.get().product == product
    assert _cart_quantities(browser) == {"shirt": 1}


def test_a_request_saving_its_session_late_keeps_the_cart_changed_meanwhile(browser, product, shirt):
    cart_fill(browser, [("procfile-mug", 1), ("shirt", 1)])
    late, changing = _two_requests(browser)
    assert cart_contents(session=late) == (("procfile-mug", 1), ("shirt", 1))
    cart_set_quantity(session=changing, product=product, quantity=3)
    cart_remove(session=changing, product=shirt)
    changing.save()
    late["something-else"] = "changed"  # e.g. the checkout page opening a checkout
    late.save()
    assert _cart_quantities(browser) == {"procfile-mug": 3}


def test_a_cart_over_the_limit_says_what_to_remove(browser, product):
    skus = [factories.product(sku=f"cup-{n}", name=f"Cup {n}", price=100).sku for n in range(MAX_LINES + 1)]
    cart_fill(browser)
    page = browser.get("/checkout/").content.decode()
    form = checkout_data(token=hidden("token", page), lines=page_lines(page))
    form["csrfmiddlewaretoken"] = hidden("csrfmiddlewaretoken", page)
    # A cart kept from before the limit counted products off sale, with all of them back on sale.
    store, _ = _two_requests(browser)
    store.locked_update("cart", lambda _: [[sku, 1] for sku in skus])
    message = (
        f"Your cart holds {MAX_LINES + 1} different products and an order takes at most {MAX_LINES}: "
        "remove 1 of them to check out."
    )
    assert element(browser.get("/cart/").content.decode(), "#error-summary .error-item").text == message
    assert browser.get("/checkout/")["Location"] == "/cart/"
    refused = browser.post("/checkout/", form)
    assert refused.status_code == 400
    assert element(refused.content.decode(), "#error-summary .error-item").text == message
    assert post(browser, "/cart/remove/", product=skus[0]).status_code == 303
    page = browser.get("/checkout/").content.decode()
    form = checkout_data(token=hidden("token", page), lines=page_lines(page))
    form["csrfmiddlewaretoken"] = hidden("csrfmiddlewaretoken", page)
    assert browser.post("/checkout/", form).status_code == 303
    assert Order.objects.get().lines.count() == MAX_LINES


def test_a_cart_whose_product_changed_currency_shows_no_sum_and_says_what_to_remove(browser, product, shirt):
    cart_fill(browser, (("procfile-mug", 1), ("shirt", 1)))
    page = browser.get("/checkout/").content.decode()
    form = checkout_data(token=hidden("token", page), lines=page_lines(page))
    form["csrfmiddlewaretoken"] = hidden("csrfmiddlewaretoken", page)
    Product.objects.filter(pk=shirt.pk).update(currency="JPY", price=5000)  # staff, meanwhile

    message = (
        "Formation shirt is now priced in JPY, the rest of your cart in EUR: "
        "an order is paid in one currency, so remove it to check out."
    )
    cart = browser.get("/cart/").content.decode()
    assert element(cart, "#error-summary .error-item").text == message
    assert element(cart, "#cart-total").text == "—"  # never €12.00 + ¥5,000 added up
    assert browser.get("/checkout/")["Location"] == "/cart/"
    refused = browser.post("/checkout/", form)
    assert refused.status_code == 400
    assert element(refused.content.decode(), "#error-summary .error-item").text == message
    assert Order.objects.count() == 0

    assert post(browser, "/cart/remove/", product="shirt").status_code == 303
    assert element(browser.get("/cart/").content.decode(), "#cart-total").text == "€12.00"


def count_in_header(browser, path="/") -> str | None:
    """Return the header's cart count on ``path`` ("3"), or None when it shows none."""
    page = browser.get(path).content.decode()
    return element(page, "#cart-count").text if 'id="cart-count"' in page else None


def test_the_header_counts_the_items_in_the_cart_on_every_page(browser, product, shirt):
    assert count_in_header(browser) is None
    cart_fill(browser, [("procfile-mug", 2), ("shirt", 1)])
    for path in ("/", "/products/procfile-mug/", "/cart/", "/checkout/", "/no-such-page/"):
        assert count_in_header(browser, path) == "3", path
    page = browser.get("/").content.decode()
    assert element(page, "#cart-link").text == "Cart 3 items"  # what a screen reader says
    Product.objects.filter(sku="shirt").update(is_active=False)
    assert count_in_header(browser) == "2"  # what the cart page shows and an order would take


def test_adding_to_the_cart_says_so_on_the_next_page(browser, product):
    response = post(browser, "/cart/add/", product="procfile-mug")
    page = browser.get(response["Location"]).content.decode()
    assert element(page, "#messages").text == "Added Procfile mug to your cart."
    assert 'id="messages"' not in browser.get("/cart/").content.decode()  # said once
    post(browser, "/cart/add/", product="procfile-mug", quantity="2")
    assert element(browser.get("/cart/").content.decode(), "#messages").text == (
        "Added 2 × Procfile mug to your cart (you have 3)."
    )


def notices(browser, path="/cart/") -> list[str]:
    page = browser.get(path).content.decode()
    if 'id="cart-notices"' not in page:
        return []
    return [
        re.sub(r"\s+", " ", item).strip()
        for item in re.findall(r"<li>(.*?)</li>", page.split('id="cart-notices"')[1].split("</div>")[0], re.S)
    ]


def test_the_cart_tells_each_line_that_changed_since_it_was_last_seen(browser, product, shirt):
    cart_fill(browser, [("procfile-mug", 2), ("shirt", 1)])
    assert notices(browser) == []  # first seen: nothing changed
    Product.objects.filter(sku="procfile-mug").update(price=1300)
    Product.objects.filter(sku="shirt").update(is_active=False)
    assert notices(browser) == [
        "The price of Procfile mug is now €13.00 (it was €12.00).",
        "Formation shirt is not on sale any more: it is left out of your order.",
    ]
    assert notices(browser) == []  # told once
    Product.objects.filter(sku="procfile-mug").update(stock=1)
    # Below the line's quantity: said at every showing while it lasts, on the checkout page too.
    short = "Only 1 left of Procfile mug. Lower the quantity to place your order."
    assert notices(browser) == [short]
    assert notices(browser, "/checkout/") == [short]
    Product.objects.filter(sku="procfile-mug").update(price=1400)
    assert notices(browser, "/checkout/") == ["The price of Procfile mug is now €14.00 (it was €13.00).", short]
    post(browser, "/cart/update/", product="procfile-mug", quantity="1")
    assert notices(browser) == []
