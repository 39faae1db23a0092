"""Checkout over HTTP (Django's test client, CSRF enforced): validation and idempotency."""

import uuid

import pytest
from django.test import Client

from mailer.models import OutboxMessage
from orders.models import Charge, Order, OrderLine, SandboxCharge
from tests.conftest import ALL_DATABASES, queued_job_ids, run_burst_worker
from tests.support import checkout_data

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.fixture
def browser():
    return Client(enforce_csrf_checks=True)


def post_checkout(browser, **kwargs):
    page = browser.get("/checkout/")
    assert page.status_code == 200
    data = checkout_data(**kwargs)
    data["csrfmiddlewaretoken"] = page.cookies["csrftoken"].value
    return browser.post("/checkout/", data)


def test_pages_render(browser, product):
    assert product.name in browser.get("/").content.decode()
    page = browser.get("/checkout/?product=procfile-mug")
    assert page.status_code == 200
    assert 'name="token"' in page.content.decode()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": ""}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"lines": (("procfile-mug", 0),)}, "lines-0-quantity"),
        ({"lines": (("procfile-mug", -1),)}, "lines-0-quantity"),
        ({"lines": (("procfile-mug", 10**12),)}, "lines-0-quantity"),
        ({"lines": (("procfile-mug", "two"),)}, "lines-0-quantity"),
        ({"lines": (("no-such-product", 1),)}, "lines-0-product"),
        ({"lines": (), "extra_rows": 1}, "lines-0-product"),
        ({"lines": (("procfile-mug", 1), ("procfile-mug", 2))}, "lines"),
        ({"token": "not-a-uuid"}, "token"),
        ({"payment_method": "pm_card_stolen"}, "payment_method"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(browser, product, overrides, field):
    response = post_checkout(browser, **{"token": uuid.uuid4(), **overrides})
    assert response.status_code == 400
    assert f"<code>{field}</code>" in response.content.decode()
    assert Order.objects.count() == 0
    assert OrderLine.objects.count() == 0


def test_no_management_form_is_a_400(browser, product):
    page = browser.get("/checkout/")
    response = browser.post(
        "/checkout/",
        {"email": "a@example.com", "token": str(uuid.uuid4()), "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
    )
    assert response.status_code == 400
    assert Order.objects.count() == 0


def test_missing_csrf_token_is_refused(product):
    response = Client(enforce_csrf_checks=True).post("/checkout/", checkout_data(token=uuid.uuid4()))
    assert response.status_code == 403
    assert Order.objects.count() == 0


def test_checkout_creates_a_pending_order_and_enqueues_it_after_commit(browser, product):
    response = post_checkout(browser, token=uuid.uuid4(), lines=(("procfile-mug", 3),))
    assert response.status_code == 303
    order = Order.objects.get()
    assert response["Location"] == f"/orders/{order.pk}/"
    assert order.status == "pending"
    assert order.total == 3 * 1200
    assert list(order.lines.values_list("quantity", "unit_price")) == [(3, 1200)]
    assert queued_job_ids() == [order.job_id]
    assert browser.get(response["Location"]).content.decode().count("pending") >= 1


def test_same_checkout_twice_gives_one_order_one_job_one_charge_one_email(browser, product, smtp):
    from django.core.management import call_command

    token = uuid.uuid4()
    first = post_checkout(browser, token=token, lines=(("procfile-mug", 2),))
    second = post_checkout(browser, token=token, lines=(("procfile-mug", 2),))
    assert first.status_code == second.status_code == 303
    assert first["Location"] == second["Location"]
    assert Order.objects.count() == 1
    assert len(queued_job_ids()) == 1

    run_burst_worker()
    order = Order.objects.get()
    assert order.status == "paid"
    assert Charge.objects.count() == 1
    assert SandboxCharge.objects.filter(idempotency_key=str(token)).count() == 1
    assert OutboxMessage.objects.count() == 1

    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["To"] == "shopper@example.com"
    assert "paid" in browser.get(first["Location"]).content.decode()


def test_a_form_post_in_another_charset_is_a_400_not_a_500(browser, product):
    page = browser.get("/checkout/")
    response = browser.generic(
        "POST",
        "/checkout/",
        "email=a".encode("utf-16"),
        content_type="application/x-www-form-urlencoded; charset=utf-16",
        HTTP_X_CSRFTOKEN=page.cookies["csrftoken"].value,
    )
    assert response.status_code == 400
    assert Order.objects.count() == 0


def test_head_of_the_checkout_page(browser, product):
    assert browser.head("/checkout/").status_code == 200


def test_products_in_two_currencies_are_a_400_naming_the_lines(browser, product):
    from orders.models import Product

    Product.objects.create(sku="dollar-mug", name="Dollar mug", price=1000, currency="USD")
    response = post_checkout(browser, token=uuid.uuid4(), lines=(("procfile-mug", 1), ("dollar-mug", 1)))
    assert response.status_code == 400
    assert "<code>lines</code>" in response.content.decode()
    assert "currency" in response.content.decode()
    assert Order.objects.count() == 0
