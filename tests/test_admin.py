"""The Django admin: staff only; orders with their lines, charge and history; outbox messages."""

import uuid

import pytest
from django.contrib.auth import get_user_model

from orders.models import Product, SandboxCharge
from orders.services import LineRequest, order_create, order_process
from tests import factories
from tests.support import ALL_DATABASES, element, element_text

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def test_admin_is_for_staff_only(client, product):
    assert client.get("/admin/orders/order/").status_code == 302  # to the login page
    user = get_user_model().objects.create_user("shopper", password="pw-123456789")
    client.force_login(user)
    assert client.get("/admin/orders/order/").status_code == 302  # not staff: login again


def test_staff_sees_orders_with_lines_charge_and_outbox(client, product):
    order, _ = order_create(email="a@example.com", lines=[LineRequest(product.pk, 2)], idempotency_key=uuid.uuid4())
    order_process(order_id=order.pk)
    admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-123456789")
    client.force_login(admin)
    page = client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "Procfile mug" in page and ">2<" in page.replace(" ", "")
    assert order.charge.gateway_charge_id in page
    assert element_text(client.get("/admin/orders/order/").content.decode(), ".field-total_display") == "€24.00"
    assert f"order-paid-{order.pk}" in client.get("/admin/mailer/outboxmessage/").content.decode()
    assert "Procfile mug" in client.get("/admin/orders/product/").content.decode()


@pytest.fixture
def staff(client):
    """The test client, logged in as a superuser."""
    client.force_login(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-123456789"))
    return client


def test_every_amount_in_the_admin_is_shown_formatted_in_its_currency(staff):
    product = factories.product(sku="yen-mug", name="Yen mug", price=500, currency="JPY")
    order, _ = order_create(email="a@example.com", lines=[LineRequest(product.pk, 2)], idempotency_key=uuid.uuid4())
    order_process(order_id=order.pk)

    products = staff.get("/admin/orders/product/?q=yen-mug").content.decode()
    assert element_text(products, "#result_list .field-price_display") == "¥500"
    orders = staff.get("/admin/orders/order/").content.decode()
    assert element_text(orders, "#result_list .field-total_display") == "¥1,000"

    page = staff.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert element_text(page, ".field-total_display .readonly") == "¥1,000"
    assert element_text(page, "#lines-group .field-unit_price_display") == "¥500"
    assert element_text(page, "#lines-group .field-amount_display") == "¥1,000"
    assert element_text(page, "#charge-group .field-amount_display .readonly") == "¥1,000"
    assert "Minor" not in page  # no help text in minor units shown to the operator

    sandbox = SandboxCharge.objects.get()
    charges = staff.get("/admin/orders/sandboxcharge/").content.decode()
    assert element_text(charges, "#result_list .field-amount_display") == "¥1,000"
    detail = staff.get(f"/admin/orders/sandboxcharge/{sandbox.pk}/change/").content.decode()
    assert element_text(detail, ".field-amount_display .readonly") == "¥1,000"
    assert "Minor" not in detail


def product_form(**overrides) -> dict:
    return {"sku": "admin-mug", "name": "Admin mug", "description": "", "stock": "7", "is_active": "on", **overrides}


@pytest.mark.parametrize(
    ("price", "currency", "stored"),
    [("9.50", "EUR", 950), ("9.5", "EUR", 950), ("12", "USD", 1200), ("500", "JPY", 500), ("1.250", "KWD", 1250)],
)
def test_the_admin_takes_a_price_in_major_units_and_stores_minor_units(staff, price, currency, stored):
    response = staff.post("/admin/orders/product/add/", product_form(price=price, currency=currency))
    assert response.status_code == 302, element_text(response.content.decode(), ".errornote")
    assert Product.objects.values_list("price", "currency").get(sku="admin-mug") == (stored, currency)


def test_the_admin_sets_a_products_stock_and_lists_it(staff):
    assert staff.post("/admin/orders/product/add/", product_form(price="9.50", currency="EUR")).status_code == 302
    assert Product.objects.get(sku="admin-mug").stock == 7
    assert element_text(staff.get("/admin/orders/product/").content.decode(), ".field-stock") == "7"
    refused = staff.post("/admin/orders/product/add/", product_form(sku="other", price="1", stock="-1"))
    assert refused.status_code == 200
    assert not Product.objects.filter(sku="other").exists()


@pytest.mark.parametrize(
    ("price", "currency", "field", "message"),
    [
        ("9.50", "JPY", "price", "JPY has no minor unit: enter a whole amount, such as 9 or 10."),
        ("1.2345", "KWD", "price", "KWD has at most 3 decimal places"),
        ("9.505", "EUR", "price", "EUR has at most 2 decimal places"),
        ("0", "EUR", "price", "must be positive"),
        ("-1", "EUR", "price", "must be positive"),
        ("nine", "EUR", "price", "Enter a number."),
        ("21474836.48", "EUR", "price", "at most €21,474,836.47"),
        ("1" + "0" * 40, "EUR", "price", "Ensure that there are no more than"),
        ("9.50", "XYZ", "currency", "Select a valid choice. XYZ is not one of the available choices."),
        ("9.50", "eur", "currency", "Select a valid choice."),
    ],
)
def test_the_admin_refuses_a_price_the_currency_cannot_charge_naming_the_field(staff, price, currency, field, message):
    response = staff.post("/admin/orders/product/add/", product_form(price=price, currency=currency))
    assert response.status_code == 200
    assert message in element_text(response.content.decode(), f"#id_{field}_error")
    assert not Product.objects.filter(sku="admin-mug").exists()


@pytest.mark.parametrize(
    ("minor", "currency", "shown"), [(950, "EUR", "9.50"), (500, "JPY", "500"), (1250, "KWD", "1.250")]
)
def test_the_admin_change_form_shows_the_price_in_major_units_and_saves_it_unchanged(staff, minor, currency, shown):
    product = factories.product(sku="admin-mug", name="Admin mug", price=minor, currency=currency)
    page = staff.get(f"/admin/orders/product/{product.pk}/change/").content.decode()
    attrs = element(page, "#id_price").attrs
    assert attrs["value"] == shown
    assert "Minor" not in page

    response = staff.post(f"/admin/orders/product/{product.pk}/change/", product_form(price=shown, currency=currency))
    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.price, product.currency) == (minor, currency)
