"""Checkout over HTTP (Django's test client, CSRF enforced): validation, one intent one order.

Each test takes the checkout's token and lines from the page, as a browser does: the token is
the session's checkout of its cart (orders.checkout), not a number the client may choose.
"""

import re
import threading
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.utils import timezone

from embedded.shopper import cart_fill, checkout_data, element, hidden, page_lines
from mailer.models import OutboxMessage
from orders.checkout import COMPLETED_REMEMBERED
from orders.jobs import clear_expired_sessions
from orders.models import DEFAULT_STOCK, MAX_LINES, Charge, Order, OrderLine, Product, SandboxCharge
from orders.services import LineRequest, PriceChanged, order_create
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.queues import queued_job_ids, run_burst_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.fixture
def browser():
    return Client(enforce_csrf_checks=True)


def checkout_form(browser, path="/checkout/", cart=None, **kwargs):
    """GET the checkout page; return the POST fields of its form (token, lines and CSRF from the page).

    With ``cart`` (``(sku, quantity)`` pairs), or when the cart is empty, fill the cart first.
    ``kwargs`` override checkout_data's fields (``lines`` replaces what the page shows).
    """
    if cart is not None or 'name="token"' not in browser.get(path).content.decode():
        cart_fill(browser, cart or (("procfile-mug", 1),))
    page = browser.get(path)
    assert page.status_code == 200
    html = page.content.decode()
    data = checkout_data(**{"token": hidden("token", html), "lines": page_lines(html), **kwargs})
    data["csrfmiddlewaretoken"] = hidden("csrfmiddlewaretoken", html)
    return data


def post_checkout(browser, **kwargs):
    return browser.post("/checkout/", checkout_form(browser, **kwargs))


def buy(browser, sku="procfile-mug"):
    """POST ``sku`` to /checkout/start/ ("buy now": add one to the cart, go to checkout); return the response."""
    catalogue = browser.get("/").content.decode()
    return browser.post(
        "/checkout/start/", {"product": sku, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", catalogue)}
    )


def page_token(response) -> str:
    return hidden("token", response.content.decode())


def test_pages_render(browser, product):
    catalogue = browser.get("/").content.decode()
    assert element(catalogue, "#add-procfile-mug").attrs["aria-label"] == "Add to cart: Procfile mug"
    assert element(catalogue, "#name-procfile-mug").text == "Procfile mug"
    assert element(browser.get("/checkout/").content.decode(), "#cart-empty").text.startswith("Your cart is empty")
    cart_fill(browser)
    page = browser.get("/checkout/")
    assert page.status_code == 200
    assert uuid.UUID(page_token(page))


# The shopper's fields get a message next to them, linked from the summary; the lines and the
# token are hidden fields the page wrote, so a bad one means the page is out of date (or forged).
NOT_THE_PAGES = "notice"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": ""}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"lines": (("procfile-mug", 0),)}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", -1),)}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", 100),)}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", 10**12),)}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", "9" * 5000),)}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", "two"),)}, NOT_THE_PAGES),
        ({"lines": (("no-such-product", 1),)}, NOT_THE_PAGES),
        ({"lines": (), "extra_rows": 1}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", 1), ("procfile-mug", 2))}, NOT_THE_PAGES),
        ({"lines": (("procfile-mug", 2),)}, NOT_THE_PAGES),  # not what the cart holds
        ({"token": "not-a-uuid"}, NOT_THE_PAGES),
        ({"payment_method": "pm_card_stolen"}, "payment_method"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(browser, product, overrides, field):
    response = post_checkout(browser, **overrides)
    assert response.status_code == 400
    html = response.content.decode()
    if field == NOT_THE_PAGES:
        assert element(html, "#checkout-notice").text == (
            "This checkout page is out of date; your cart is unchanged — review it and place the order again."
        )
        assert 'id="error-summary"' not in html
    else:
        summary = element(html, "#error-summary")
        assert summary.attrs["tabindex"] == "-1" and "autofocus" in summary.attrs
        link = element(html, "#error-summary .error-link")
        assert link.attrs["href"] == f"#id_{field}"
        message = element(html, f"#id_{field}-error").text
        assert message.removeprefix("Error: ") == link.text
        assert element(html, f"#id_{field}").attrs["aria-invalid"] == "true"
        assert element(html, f"#id_{field}").attrs["aria-describedby"] == f"id_{field}-error"
        for internal in ("lines-0", "payment_method", "UUID", "token", "("):
            assert internal not in summary.text
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0


def test_the_shoppers_words_for_each_field(browser, product):
    empty = post_checkout(browser, email="").content.decode()
    assert (
        element(empty, "#id_email-error").text == "Error: Enter your email address, so we can send your confirmation."
    )
    bad = post_checkout(browser, email="not-an-email", payment_method="pm_card_stolen").content.decode()
    assert element(bad, "#error-summary-title").text == "There are 2 problems"
    assert element(bad, "#id_email-error").text == "Error: Enter an email address like name@example.com."
    assert element(bad, "#id_payment_method-error").text == "Error: Choose how to pay from the list."
    assert element(bad, "#id_email").attrs["value"] == "not-an-email"  # the input is kept


def test_no_management_form_is_a_400(browser, product):
    form = checkout_form(browser)
    response = browser.post(
        "/checkout/",
        {"email": "a@example.com", "token": form["token"], "csrfmiddlewaretoken": form["csrfmiddlewaretoken"]},
    )
    assert response.status_code == 400
    assert Order.objects.count() == 0


def test_missing_csrf_token_is_refused(product):
    browser = Client(enforce_csrf_checks=True)
    data = checkout_form(browser)
    del data["csrfmiddlewaretoken"]
    assert browser.post("/checkout/", data).status_code == 403
    assert browser.post("/checkout/start/", {"product": "procfile-mug"}).status_code == 403
    assert Order.objects.count() == 0


def test_checkout_creates_a_pending_order_and_enqueues_it_after_commit(browser, product):
    response = post_checkout(browser, cart=(("procfile-mug", 3),))
    assert response.status_code == 303
    order = Order.objects.get()
    assert response["Location"] == f"/orders/{order.pk}/"
    assert order.status == "pending"
    assert order.total == 3 * 1200
    assert list(order.lines.values_list("quantity", "unit_price")) == [(3, 1200)]
    assert queued_job_ids() == [order.job_id]
    assert element(browser.get(response["Location"]).content.decode(), "#order-status").text == "pending"


def test_same_checkout_twice_gives_one_order_one_job_one_charge_one_email(browser, product, smtp):
    form = checkout_form(browser, cart=(("procfile-mug", 2),))
    first = browser.post("/checkout/", form)
    second = browser.post("/checkout/", form)
    assert first.status_code == second.status_code == 303
    assert first["Location"] == second["Location"]
    assert Order.objects.count() == 1
    assert len(queued_job_ids()) == 1

    run_burst_worker()
    order = Order.objects.get()
    assert order.status == "paid"
    assert Charge.objects.count() == 1
    assert SandboxCharge.objects.filter(idempotency_key=form["token"]).count() == 1
    assert OutboxMessage.objects.count() == 1

    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["To"] == "shopper@example.com"
    assert element(browser.get(first["Location"]).content.decode(), "#order-status").text == "paid"


def test_a_form_post_in_another_charset_is_a_400_not_a_500(browser, product):
    checkout_form(browser)
    response = browser.generic(
        "POST",
        "/checkout/",
        "email=a".encode("utf-16"),
        content_type="application/x-www-form-urlencoded; charset=utf-16",
        HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
    )
    assert response.status_code == 400
    assert Order.objects.count() == 0


def test_head_of_the_checkout_page(browser, product):
    assert browser.head("/checkout/").status_code == 200


def test_products_in_two_currencies_are_a_400_naming_the_lines(browser, product):
    """An order has one currency: the cart refuses a product in another (and order_create would too)."""
    factories.product(sku="dollar-mug", name="Dollar mug", price=1000, currency="USD")
    cart_fill(browser)
    token = hidden("csrfmiddlewaretoken", browser.get("/").content.decode())
    response = browser.post("/cart/add/", {"product": "dollar-mug", "csrfmiddlewaretoken": token})
    assert response.status_code == 400
    item = element(response.content.decode(), "#error-summary .error-link")
    assert item.text == "Dollar mug is priced in USD and your cart in EUR: order it separately."
    assert item.attrs["href"] == "#product-dollar-mug"
    assert [row[0] for row in page_lines(browser.get("/checkout/").content.decode())] == ["procfile-mug"]
    assert Order.objects.count() == 0


# Starting: the catalogue's Add to cart is a POST; /checkout/start/ ("buy now") adds and goes to checkout.


def test_buy_opens_a_new_checkout_with_the_product_and_redirects_to_it(browser, product):
    response = buy(browser)
    assert response.status_code == 303
    assert response["Location"] == "/checkout/"
    page = browser.get("/checkout/").content.decode()
    assert page_lines(page) == [("procfile-mug", 1)]
    assert element(page, "#checkout-qty-procfile-mug").text == "1"
    first_token = hidden("token", page)
    assert hidden("token", browser.get("/checkout/").content.decode()) == first_token  # reload: same checkout
    buy(browser)  # the cart changed: a new checkout, bound to the new contents
    page = browser.get("/checkout/").content.decode()
    assert hidden("token", page) != first_token
    assert page_lines(page) == [("procfile-mug", 2)]


def test_buy_is_a_post_form(browser, product):
    catalogue = browser.get("/").content.decode()
    button = element(catalogue, "#add-procfile-mug")
    assert button.tag == "button" and button.attrs["name"] == "product" and button.attrs["value"] == "procfile-mug"
    assert re.search(r'<form method="post" action="/cart/add/">', catalogue)
    for path in ("/cart/add/", "/cart/update/", "/cart/remove/", "/checkout/start/"):
        assert browser.get(f"{path}?product=procfile-mug").status_code == 405
    assert "cart" not in browser.session


@pytest.mark.parametrize("sku", ["no-such-product", "", "x" * 5000])
def test_buy_of_an_unknown_product_is_a_400_naming_the_field(browser, product, sku):
    response = buy(browser, sku)
    assert response.status_code == 400
    expected = "Choose a product from the catalogue." if not sku else "That product is not on sale any more."
    assert element(response.content.decode(), "#error-summary .error-item").text == expected
    assert "checkout" not in browser.session and "cart" not in browser.session


# One intent, one order: a completed checkout shows the order it became.


def test_checkout_page_of_a_completed_checkout_links_to_the_order_and_has_no_form(browser, product):
    buy(browser)
    placed = post_checkout(browser)
    assert placed.status_code == 303
    for _ in range(2):  # Back (the page is fetched again), reload, a second tab: the same
        page = browser.get("/checkout/")
        assert page.status_code == 200
        html = page.content.decode()
        assert element(html, "#order-link").attrs["href"] == placed["Location"]
        assert 'name="token"' not in html
        assert element(html, "#catalogue-link").attrs["href"] == "/"
    assert Order.objects.count() == 1


def test_back_then_place_order_again_makes_no_second_order(browser, product):
    """The issue's sequence at HTTP level: Place order, Back, Place order on what Back shows."""
    buy(browser)
    form = checkout_form(browser)
    first = browser.post("/checkout/", form)
    back = browser.get("/checkout/").content.decode()
    if 'name="token"' in back:  # before the fix: a fresh form with a new token
        again = browser.post("/checkout/", {**form, "token": hidden("token", back)})
    else:  # the restored page from the browser's cache posts the old form again
        again = browser.post("/checkout/", form)
    assert again.status_code == 303
    assert again["Location"] == first["Location"]
    assert Order.objects.count() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"lines": (("procfile-mug", 2),)},
        {"email": "other@example.com"},
        {"payment_method": "pm_card_chargeDeclined"},
    ],
)
def test_a_completed_checkout_posted_with_other_contents_is_a_409_linking_to_the_order(browser, product, change):
    form = checkout_form(browser)
    first = browser.post("/checkout/", form)
    changed = {**form, **checkout_data(token=form["token"], **change)}
    response = browser.post("/checkout/", changed)
    assert response.status_code == 409
    assert element(response.content.decode(), "#order-link").attrs["href"] == first["Location"]
    order = Order.objects.get()
    assert (order.email, order.payment_method) == ("shopper@example.com", "pm_card_visa")
    assert list(order.lines.values_list("quantity", flat=True)) == [1]
    assert len(queued_job_ids()) == 1


def test_a_token_that_is_not_this_sessions_checkout_is_a_400_keeping_the_input(browser, product):
    form = checkout_form(browser, email="keep@example.com", cart=(("procfile-mug", 4),))
    session_token = form["token"]
    response = browser.post("/checkout/", {**form, "token": str(uuid.uuid4())})
    assert response.status_code == 400
    html = response.content.decode()
    assert element(html, "#checkout-notice").text.startswith("This checkout page is out of date")
    assert hidden("token", html) == session_token
    assert element(html, "#id_email").attrs["value"] == "keep@example.com"
    assert element(html, "#id_lines-0-quantity").attrs["value"] == "4"
    assert Order.objects.count() == 0
    # Sending the re-rendered form again places the order.
    assert browser.post("/checkout/", {**form, "token": hidden("token", html)}).status_code == 303
    assert Order.objects.get().lines.get().quantity == 4


def test_an_expired_session_is_a_400_with_a_new_checkout_and_the_input_kept(browser, product):
    form = checkout_form(browser, email="keep@example.com")
    browser.cookies.pop(settings.SESSION_COOKIE_NAME)  # the session expired
    response = browser.post("/checkout/", form)
    assert response.status_code == 400
    html = response.content.decode()
    assert hidden("token", html) != form["token"]
    assert element(html, "#id_email").attrs["value"] == "keep@example.com"
    assert Order.objects.count() == 0


def test_a_stale_token_after_the_sessions_checkout_was_placed_is_a_400_linking_to_the_order(browser, product):
    old_tab = checkout_form(browser)  # a tab left open on an earlier checkout
    buy(browser)
    placed = browser.post("/checkout/", checkout_form(browser))
    response = browser.post("/checkout/", old_tab)
    assert response.status_code == 400
    assert element(response.content.decode(), "#order-link").attrs["href"] == placed["Location"]
    assert Order.objects.count() == 1


def _post_concurrently(cookies, forms):
    """POST each form from its own client (sharing ``cookies``) at the same instant; return the responses."""
    barrier = threading.Barrier(len(forms))
    responses = [None] * len(forms)

    def submit(index, form):
        client = Client(enforce_csrf_checks=True)
        client.cookies = cookies
        barrier.wait(timeout=10)
        try:
            responses[index] = client.post("/checkout/", form)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=(index, form)) for index, form in enumerate(forms)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return responses


def test_concurrent_double_submit_makes_one_order(browser, product):
    form = checkout_form(browser)
    responses = _post_concurrently(browser.cookies, [form, form, form])
    assert [response.status_code for response in responses] == [303, 303, 303]
    assert len({response["Location"] for response in responses}) == 1
    assert Order.objects.count() == 1


def test_concurrent_submits_with_other_contents_make_one_order_and_a_409(browser, product):
    form = checkout_form(browser)
    changed = {**form, "email": "other@example.com"}
    responses = _post_concurrently(browser.cookies, [form, changed])
    assert sorted(response.status_code for response in responses) == [303, 409]
    assert Order.objects.count() == 1


# Bounded work, whatever the client claims.


@pytest.mark.parametrize(
    "claim",
    [
        {"lines-TOTAL_FORMS": "1000000"},
        {"lines-TOTAL_FORMS": str(MAX_LINES + 1)},
        {"lines-TOTAL_FORMS": "1000000", "lines-INITIAL_FORMS": "1000000"},
        {"lines-TOTAL_FORMS": "1000000", "lines-MIN_NUM_FORMS": "1000000", "lines-MAX_NUM_FORMS": "1000000"},
    ],
)
def test_a_huge_form_count_builds_at_most_the_shops_limit(browser, product, claim):
    small = browser.post("/checkout/", checkout_form(browser, **{"email": ""}))
    response = browser.post("/checkout/", checkout_form(browser, **claim))
    assert response.status_code == 400
    html = response.content.decode()
    assert len(set(re.findall(r'name="lines-(\d+)-product"', html))) <= MAX_LINES
    # One page of at most MAX_LINES lines: within a few times the size of a page with the usual 3.
    assert len(html) < 8 * len(small.content), (len(html), len(small.content))
    assert Order.objects.count() == 0


def test_more_lines_than_the_shop_takes_are_refused(browser, product):
    skus = [factories.product(sku=f"mug-{n}", name=f"Mug {n}", price=100).sku for n in range(MAX_LINES + 1)]
    cart_fill(browser, [(sku, 99) for sku in skus[:MAX_LINES]])
    token = hidden("csrfmiddlewaretoken", browser.get("/").content.decode())
    refused = browser.post("/cart/add/", {"product": skus[-1], "csrfmiddlewaretoken": token})
    assert refused.status_code == 400
    assert element(refused.content.decode(), "#error-summary .error-item").text == (
        f"Your cart holds at most {MAX_LINES} different products: place this order first."
    )
    form = checkout_form(browser)
    posted = browser.post("/checkout/", {**form, **checkout_data(token=form["token"], lines=[(s, 1) for s in skus])})
    assert posted.status_code == 400
    assert Order.objects.count() == 0
    assert browser.post("/checkout/", form).status_code == 303
    assert Order.objects.get().lines.count() == MAX_LINES


def test_expired_sessions_and_their_checkouts_are_deleted_by_the_periodic_job(browser, product):
    checkout_form(browser)
    live = browser.cookies[settings.SESSION_COOKIE_NAME].value
    other = Client()
    checkout_form(other)
    Session.objects.filter(pk=other.cookies[settings.SESSION_COOKIE_NAME].value).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    clear_expired_sessions()
    assert list(Session.objects.values_list("pk", flat=True)) == [live]
    assert any(entry["func"] == "orders.jobs.clear_expired_sessions" for entry in settings.PERIODIC_JOBS)


# A checkout belongs to the session that opened it.


@pytest.mark.parametrize("contents", ["same", "other"])
def test_another_sessions_completed_checkout_token_is_a_400_that_shows_nothing_of_its_order(product, contents):
    shopper = Client(enforce_csrf_checks=True)
    form = checkout_form(shopper, email="first@example.com", cart=(("procfile-mug", 2),))
    placed = shopper.post("/checkout/", form)
    assert placed.status_code == 303
    other = Client(enforce_csrf_checks=True)
    other_form = checkout_form(other)  # their own checkout, CSRF cookie and token
    change = {} if contents == "same" else {"email": "second@example.com"}
    replay = {**form, **change, "csrfmiddlewaretoken": other_form["csrfmiddlewaretoken"]}
    response = other.post("/checkout/", replay)
    assert response.status_code == 400
    html = response.content.decode()
    assert element(html, "#checkout-notice").text.startswith("This checkout page is out of date")
    assert hidden("token", html) == other_form["token"]  # their own checkout, not the first shopper's
    assert 'id="order-link"' not in html and placed["Location"] not in html
    order = Order.objects.get()
    assert (order.email, list(order.lines.values_list("quantity", flat=True))) == ("first@example.com", [2])


def test_a_session_replays_its_completed_checkouts_after_starting_new_ones(browser, product):
    first_form = checkout_form(browser)
    first = browser.post("/checkout/", first_form)
    buy(browser)
    second = browser.post("/checkout/", checkout_form(browser, email="again@example.com"))
    assert second.status_code == 303 and second["Location"] != first["Location"]
    buy(browser)  # a third checkout, open
    replay = browser.post("/checkout/", first_form)
    assert replay.status_code == 303
    assert replay["Location"] == first["Location"]
    changed = browser.post("/checkout/", {**first_form, "lines-0-quantity": "5"})
    assert changed.status_code == 409
    assert element(changed.content.decode(), "#order-link").attrs["href"] == first["Location"]
    assert Order.objects.count() == 2


def test_a_session_remembers_its_last_20_completed_checkouts(browser, product):
    forms = []
    for _ in range(COMPLETED_REMEMBERED + 1):
        buy(browser)
        forms.append(checkout_form(browser))
        assert browser.post("/checkout/", forms[-1]).status_code == 303
    buy(browser)  # the last one is no longer the session's current checkout either
    assert browser.post("/checkout/", forms[1]).status_code == 303  # the oldest remembered
    forgotten = browser.post("/checkout/", forms[0])
    assert forgotten.status_code == 400
    assert 'id="order-link"' not in forgotten.content.decode()
    assert Order.objects.count() == COMPLETED_REMEMBERED + 1


def test_a_price_changed_after_the_checkout_page_was_shown_is_a_400_and_charges_nothing(browser, product):
    form = checkout_form(browser, cart=(("procfile-mug", 2),))  # the page showed €12.00 each
    Product.objects.filter(pk=product.pk).update(price=99900)  # staff change the price meanwhile
    response = browser.post("/checkout/", form)
    assert response.status_code == 400
    html = response.content.decode()
    assert element(html, "#checkout-notice").text.startswith("This checkout page is out of date")
    assert (Order.objects.count(), SandboxCharge.objects.count()) == (0, 0)
    assert Product.objects.get(pk=product.pk).stock == DEFAULT_STOCK  # nothing taken

    # The page shown again has the new price and a new checkout: that one is placed at it.
    again = browser.get("/checkout/").content.decode()
    assert element(again, "#checkout-total").text == "€1,998.00"
    assert hidden("token", again) != form["token"]
    placed = browser.post("/checkout/", {**form, "token": hidden("token", again)})
    assert placed.status_code == 303
    assert Order.objects.get().total == 199800


def test_order_create_refuses_a_line_whose_shown_price_is_not_the_products(product):
    with pytest.raises(PriceChanged):
        order_create(
            email="a@example.com", lines=[LineRequest(product.pk, 1, unit_price=1100)], idempotency_key=uuid.uuid4()
        )
    order, created = order_create(
        email="a@example.com", lines=[LineRequest(product.pk, 1, unit_price=1200)], idempotency_key=uuid.uuid4()
    )
    assert created and order.total == 1200
