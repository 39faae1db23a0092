"""Stock: taken with the order in one transaction, never oversold, given back by a declined payment.

The races run order_create in threads, each with its own PostgreSQL connection (Django's
connections are per thread), released together by a barrier.
"""

import threading
import uuid

import pytest
from django.db import connections
from django.test import Client

from embedded.shopper import cart_fill, checkout_data, element, hidden, page_lines
from orders.models import Order, PaymentMethod, Product, SandboxCharge
from orders.services import LineRequest, OrderRefused, order_create, order_process, order_stock_return, order_stock_take
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)

RACES = 100


def _race(product: Product, shoppers: int) -> list:
    """Call order_create for one unit of ``product`` from ``shoppers`` threads at once; return each outcome."""
    barrier = threading.Barrier(shoppers)
    outcomes = [None] * shoppers

    def shop(index):
        try:
            barrier.wait(timeout=10)
            outcomes[index] = order_create(
                email=f"shopper{index}@example.com",
                lines=[LineRequest(product_id=product.pk, quantity=1)],
                idempotency_key=uuid.uuid4(),
            )[0]
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=shop, args=(index,)) for index in range(shoppers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.mark.parametrize("shoppers", [2, 3])
def test_the_last_item_bought_at_once_makes_one_order_in_every_race(shoppers):
    product = factories.product(stock=1)
    for race in range(RACES):
        Product.objects.filter(pk=product.pk).update(stock=1)
        before = Order.objects.count()
        outcomes = _race(product, shoppers)
        orders = [outcome for outcome in outcomes if isinstance(outcome, Order)]
        refusals = [outcome for outcome in outcomes if isinstance(outcome, OrderRefused)]
        assert (len(orders), len(refusals)) == (1, shoppers - 1), (race, outcomes)
        assert refusals[0].message.startswith("Procfile mug is sold out.")
        assert Order.objects.count() == before + 1
        assert Product.objects.get(pk=product.pk).stock == 0


def test_an_order_takes_its_stock_and_too_little_is_refused_naming_the_product():
    shirt = factories.product(sku="shirt", name="Formation shirt", price=2000, stock=1)
    mug = factories.product(stock=3)
    order_create(email="a@example.com", lines=[LineRequest(mug.pk, 2)], idempotency_key=uuid.uuid4())
    mug.refresh_from_db()
    assert mug.stock == 1
    with pytest.raises(OrderRefused) as refused:
        # The shirt is taken first (lower... or higher pk: all or nothing either way).
        order_create(
            email="b@example.com",
            lines=[LineRequest(shirt.pk, 1), LineRequest(mug.pk, 2)],
            idempotency_key=uuid.uuid4(),
        )
    assert refused.value.message == "Only 1 left of Procfile mug. Change your cart and place the order again."
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=shirt.pk).stock == 1  # rolled back with the refused order
    assert Product.objects.get(pk=mug.pk).stock == 1


def test_the_same_checkout_twice_takes_the_stock_once():
    mug = factories.product(stock=1)
    key = uuid.uuid4()
    first, created = order_create(email="a@example.com", lines=[LineRequest(mug.pk, 1)], idempotency_key=key)
    again, created_again = order_create(email="a@example.com", lines=[LineRequest(mug.pk, 1)], idempotency_key=key)
    assert (created, created_again, again.pk) == (True, False, first.pk)
    assert Product.objects.get(pk=mug.pk).stock == 0


def test_a_declined_payment_gives_the_stock_back():
    mug = factories.product(stock=5)
    declined, _ = order_create(
        email="a@example.com",
        lines=[LineRequest(mug.pk, 2)],
        idempotency_key=uuid.uuid4(),
        payment_method=PaymentMethod.DECLINED,
    )
    paid, _ = order_create(email="b@example.com", lines=[LineRequest(mug.pk, 1)], idempotency_key=uuid.uuid4())
    assert Product.objects.get(pk=mug.pk).stock == 2
    assert order_process(order_id=declined.pk).status == "failed"
    assert Product.objects.get(pk=mug.pk).stock == 4
    order_process(order_id=declined.pk)  # a rerun of the failed order gives nothing back twice
    assert order_process(order_id=paid.pk).status == "paid"
    assert Product.objects.get(pk=mug.pk).stock == 4


def test_stock_take_and_return_are_services_for_other_callers():
    """order_stock_take / order_stock_return work on an existing order (e.g. an admin re-run)."""
    mug = factories.product(stock=2)
    order, _ = order_create(email="a@example.com", lines=[LineRequest(mug.pk, 2)], idempotency_key=uuid.uuid4())
    assert Product.objects.get(pk=mug.pk).stock == 0
    order_stock_return(order=order)
    assert Product.objects.get(pk=mug.pk).stock == 2
    order_stock_take(order=order)
    assert Product.objects.get(pk=mug.pk).stock == 0
    with pytest.raises(OrderRefused, match=r"^Procfile mug is sold out\."):
        order_stock_take(order=order)
    assert Product.objects.get(pk=mug.pk).stock == 0


def _checkout_page(client: Client) -> dict:
    cart_fill(client)
    html = client.get("/checkout/").content.decode()
    data = checkout_data(token=hidden("token", html), lines=page_lines(html))
    return {**data, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", html)}


def test_the_second_shopper_for_the_last_item_is_told_it_is_sold_out_and_is_not_charged():
    factories.product(stock=1)
    first, second = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    first_form, second_form = _checkout_page(first), _checkout_page(second)
    assert first.post("/checkout/", first_form).status_code == 303
    response = second.post("/checkout/", second_form)
    assert response.status_code == 400
    html = response.content.decode()
    item = element(html, "#error-summary .error-link")
    assert item.text == "Procfile mug is sold out. Change your cart and place the order again."
    assert item.attrs["href"] == "#checkout-lines"
    assert element(html, "#id_email").attrs["value"] == "shopper@example.com"  # the input is kept
    assert Order.objects.count() == 1
    assert SandboxCharge.objects.count() == 0
    # The catalogue says so too, and offers no button.
    catalogue = second.get("/").content.decode()
    assert element(catalogue, "#stock-procfile-mug").text == "Sold out"
    assert 'id="add-procfile-mug"' not in catalogue
