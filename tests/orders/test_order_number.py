"""Every order has a short number (Order.number, shown "F-1001") from a PostgreSQL sequence: on the
order page, the checkout's "already placed" page, the email and the admin list; staff find an order
by it. The migration that adds it numbers the orders already there, oldest first, in batches."""

import importlib
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from embedded.shopper import element_text
from mailer.models import OutboxMessage
from orders.models import ORDER_NUMBER_PREFIX, Order
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def test_each_order_gets_the_next_number_and_every_page_and_email_shows_it(client):
    first, second = factories.order(), factories.order()
    assert first.number is not None  # read back from the INSERT (RETURNING), no second query
    assert second.number == first.number + 1
    assert second.reference == f"{ORDER_NUMBER_PREFIX}{second.number}" == f"F-{second.number}"

    page = client.get(f"/orders/{second.pk}/").content.decode()
    assert element_text(page, "#order-number") == second.reference
    assert re.search(r"<title>([^<]*)</title>", page)[1] == f"Order {second.reference} · Formation shop"

    order_process(order_id=second.pk)
    message = OutboxMessage.objects.get(key=Order.objects.get(pk=second.pk).confirmation_key)
    assert message.subject == f"Your Formation order {second.reference} is confirmed"
    assert f"Order number: {second.reference}\n" in message.body


def test_staff_see_the_number_in_the_list_and_find_an_order_by_it(client):
    client.force_login(factories.staff_user(superuser=True))
    orders = [factories.order() for _ in range(3)]
    page = client.get("/admin/orders/order/").content.decode()
    shown = re.findall(r'<th class="field-reference"><a href="[^"]+">([^<]+)</a></th>', page)
    assert shown == [order.reference for order in reversed(orders)]
    wanted = orders[1]
    for typed in (wanted.reference, wanted.reference.lower(), f"F{wanted.number}", f" {wanted.reference} "):
        found = client.get("/admin/orders/order/", {"q": typed}).content.decode()
        assert re.findall(r"/admin/orders/order/([0-9a-f-]{36})/change/", found) == [str(wanted.pk)], typed


def test_the_migration_numbers_the_orders_already_there_oldest_first_in_batches(monkeypatch):
    placed = [factories.order() for _ in range(5)]
    now = timezone.now()
    # Their order in time is the reverse of their creation here.
    for age, order in enumerate(placed):
        Order.objects.filter(pk=order.pk).update(created_at=now - timedelta(minutes=age))
    migration = importlib.import_module("orders.migrations.0010_order_number")
    monkeypatch.setattr(migration, "BATCH", 2)
    try:
        call_command("migrate", "orders", "0009", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders_order'"
                " AND column_name = 'number'"
            )
            assert cursor.fetchone() == (0,)
    finally:
        # The post-deploy step's command, which applies the contract migration 0013 too: the
        # release phase's (without --contract) would leave it unapplied for the tests after this one.
        call_command("migrate", "orders", contract=True, verbosity=0)
    numbers = dict(Order.objects.values_list("pk", "number"))
    oldest_first = [numbers[order.pk] for order in reversed(placed)]
    assert oldest_first == list(range(1001, 1006)), oldest_first
    assert factories.order().number == 1006  # the sequence goes on from there
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'orders_order_number_key'")
        assert "UNIQUE" in cursor.fetchone()[0]
