"""The Django admin: staff only; orders with their lines, charge and history; outbox messages."""

import uuid

import pytest
from django.contrib.auth import get_user_model

from orders.services import LineRequest, order_create, order_process
from tests.conftest import ALL_DATABASES

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
    assert "24.00 EUR" in client.get("/admin/orders/order/").content.decode()
    assert f"order-paid-{order.pk}" in client.get("/admin/mailer/outboxmessage/").content.decode()
    assert "Procfile mug" in client.get("/admin/orders/product/").content.decode()
