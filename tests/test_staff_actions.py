"""Staff actions on an order's page: mark shipped with a tracking reference (emails the shopper
through the outbox) and internal notes; each recorded in the status history with the staff user,
each safe to send twice (a one-time token per form)."""

import re

import pytest
from django.contrib.auth.models import Permission

from embedded.shopper import element, element_text, hidden
from mailer.models import OutboxMessage
from orders.models import Order, OrderStatusChange, PaymentMethod
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.fixture
def staff(client):
    client.force_login(factories.staff_user(username="ada", superuser=True))
    return client


def page_of(client, order) -> str:
    return client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()


def messages_of(response) -> list[str]:
    return [
        re.sub(r"\s+", " ", m).strip() for m in re.findall(r'<li class="[a-z]+">(.*?)</li>', response.content.decode())
    ]


def test_staff_mark_a_paid_order_shipped_once_and_the_shopper_is_emailed_once(staff):
    order = order_process(order_id=factories.order().pk)
    page = page_of(staff, order)
    token = element(page, "#ship-form [name=token]").attrs["value"]
    form = {
        "tracking": "  1Z999AA10123456784 ",
        "token": token,
        "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
    }
    url = f"/admin/orders/order/{order.pk}/ship/"
    shipped = staff.post(url, form, follow=True)
    assert messages_of(shipped) == ["Marked shipped; the shopper is emailed."]
    order = Order.objects.get(pk=order.pk)
    assert order.shipped_at is not None and order.tracking_reference == "1Z999AA10123456784"
    email = OutboxMessage.objects.get(key=f"order-shipped-{order.pk}")
    assert email.subject == f"Your Formation order {order.reference} is on its way"
    assert "Tracking reference: 1Z999AA10123456784\n" in email.body and email.to_email == order.email
    history = OrderStatusChange.objects.filter(order=order, reason__startswith="shipped")
    assert [(row.reason, row.actor) for row in history] == [("shipped (tracking 1Z999AA10123456784)", "ada")]

    # The same form again (a double click, a retried POST): nothing more.
    assert messages_of(staff.post(url, form, follow=True)) == ["This order was marked shipped already."]
    # A new form for an order shipped already: refused, saying with which reference.
    again = staff.post(url, {**form, "token": "0" * 32}, follow=True)
    assert messages_of(again) == [f"Order {order.reference} was shipped already (tracking 1Z999AA10123456784)."]
    assert OutboxMessage.objects.filter(key__startswith="order-shipped-").count() == 1
    assert history.count() == 1
    page = page_of(staff, order)
    assert "Tracking 1Z999AA10123456784" in element_text(page, "#shipped").replace("tracking", "Tracking")
    assert 'id="ship-form"' not in page


@pytest.mark.parametrize("status", ["pending", "failed"])
def test_an_order_not_paid_is_not_shipped(staff, status):
    order = factories.order(payment_method=PaymentMethod.DECLINED if status == "failed" else PaymentMethod.VISA)
    if status == "failed":
        order = order_process(order_id=order.pk)
    assert 'id="ship-form"' not in page_of(staff, order)
    page = page_of(staff, order)
    form = {"tracking": "T1", "token": "1" * 32, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
    refused = staff.post(f"/admin/orders/order/{order.pk}/ship/", form, follow=True)
    assert messages_of(refused) == [f"Order {order.reference} is {status}: only a paid order is shipped."]
    assert Order.objects.get(pk=order.pk).shipped_at is None
    assert not OutboxMessage.objects.filter(key__startswith="order-shipped-").exists()


def test_a_note_is_added_once_per_form_signed_and_an_empty_one_is_refused(staff):
    order = factories.order()
    page = page_of(staff, order)
    form = {
        "text": "Shopper called: leave it with the neighbour.",
        "token": element(page, "#note-form [name=token]").attrs["value"],
        "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
    }
    url = f"/admin/orders/order/{order.pk}/note/"
    assert messages_of(staff.post(url, form, follow=True)) == ["Note added."]
    assert messages_of(staff.post(url, form, follow=True)) == ["This note was added already."]
    notes = OrderStatusChange.objects.filter(order=order, reason__startswith="note: ")
    assert [(row.reason, row.actor) for row in notes] == [("note: Shopper called: leave it with the neighbour.", "ada")]
    assert "leave it with the neighbour" in element_text(page_of(staff, order), "#status_changes-group")
    empty = staff.post(url, {**form, "text": "   ", "token": "2" * 32}, follow=True)
    assert messages_of(empty) == ["Write a note of 1 to 2,000 characters."]
    assert notes.count() == 1
    # The shopper's page never shows a note.
    assert "neighbour" not in staff.get(f"/orders/{order.pk}/").content.decode()


def test_the_actions_need_the_change_permission_and_a_post(client):
    order = order_process(order_id=factories.order().pk)
    viewer = factories.staff_user(username="viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))
    client.force_login(viewer)
    page = page_of(client, order)
    assert 'id="staff-actions"' not in page
    form = {"tracking": "T1", "token": "3" * 32, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
    assert client.post(f"/admin/orders/order/{order.pk}/ship/", form).status_code == 403
    assert Order.objects.get(pk=order.pk).shipped_at is None
    client.force_login(factories.staff_user(username="boss", superuser=True))
    assert client.get(f"/admin/orders/order/{order.pk}/ship/").status_code == 405
