"""The cart over HTTP: add from the catalogue (POST), change quantities, remove, a running total."""

import pytest
from django.test import Client

from orders.models import MAX_LINE_QUANTITY, Product
from tests import factories
from tests.support import ALL_DATABASES, cart_fill, checkout_data, element, hidden, page_lines

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
        ("99", "Only 10 Procfile mug left."),
    ],
)
def test_a_bad_quantity_is_a_400_next_to_its_field_with_the_input_kept(browser, quantity, message):
    factories.product(stock=10)
    cart_fill(browser, [("procfile-mug", 2)])
    response = post(browser, "/cart/update/", product="procfile-mug", quantity=quantity)
    assert response.status_code == 400
    html = response.content.decode()
    link = element(html, "#error-summary .error-link")
    assert (link.text, link.attrs["href"]) == (message, "#cart-quantity-procfile-mug")
    assert element(html, "#cart-quantity-procfile-mug-error").text == f"Error: {message}"
    field = element(html, "#cart-quantity-procfile-mug")
    assert field.attrs["aria-invalid"] == "true"
    assert field.attrs["aria-describedby"] == "cart-quantity-procfile-mug-error"
    assert field.attrs["value"] == quantity
    assert page_lines_in_cart(browser) == [("procfile-mug", 2)]  # unchanged


def page_lines_in_cart(browser):
    return page_lines(browser.get("/checkout/").content.decode())


def test_adding_more_than_the_stock_is_refused_naming_the_product(browser):
    factories.product(stock=1)
    cart_fill(browser)
    response = post(browser, "/cart/add/", product="procfile-mug")
    assert response.status_code == 400
    assert element(response.content.decode(), "#error-summary .error-link").text == "Only 1 Procfile mug left."
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
    assert element(page, "#add-procfile-mug").attrs["value"] == "procfile-mug"


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
