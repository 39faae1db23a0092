"""Staff operations on orders (orders.operations) below the admin: the rules the actions rely on."""

import uuid

import pytest
from django.db import transaction

from orders.locks import order_lock
from orders.models import PaymentMethod, Product
from orders.operations import ConfirmationNotSent, Rerun, order_confirmation_resend, order_rerun
from orders.services import (
    InvalidStatusTransition,
    OrderRefused,
    order_process,
    order_set_status,
)
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def declined(product):
    order = factories.order(product=product, email="a@example.com", payment_method=PaymentMethod.DECLINED)
    return order_process(order_id=order.pk)


def test_failed_goes_back_to_pending_only_when_staff_ask(product):
    order = declined(product)
    with pytest.raises(InvalidStatusTransition), transaction.atomic():
        order_set_status(order=order_lock(order_id=order.pk), status="pending", reason="retry")
    order.refresh_from_db()
    assert order.status == "failed"

    assert order_rerun(order_id=order.pk, actor="admin") is Rerun.NEEDS_METHOD  # never the same card silently
    order.refresh_from_db()
    assert order.status == "failed"
    assert order_rerun(order_id=order.pk, actor="admin", payment_method=PaymentMethod.VISA) is Rerun.RESTARTED
    order.refresh_from_db()
    assert (order.status, order.payment_method) == ("pending", PaymentMethod.VISA)


def test_paid_orders_never_go_back_to_pending(product):
    order = factories.order(product=product, email="a@example.com")
    order_process(order_id=order.pk)
    with pytest.raises(InvalidStatusTransition), transaction.atomic():
        order_set_status(order=order_lock(order_id=order.pk), status="pending", actor="admin")
    assert order_rerun(order_id=order.pk, actor="admin") is Rerun.PAID


def test_a_resend_needs_a_processed_order_and_a_well_formed_token(product):
    order = factories.order(product=product, email="a@example.com")
    with pytest.raises(ConfirmationNotSent):
        order_confirmation_resend(order_id=order.pk, actor="admin", token=uuid.uuid4().hex)
    order_process(order_id=order.pk)
    with pytest.raises(ValueError):
        order_confirmation_resend(order_id=order.pk, actor="admin", token="x" * 500)
    message, created = order_confirmation_resend(order_id=order.pk, actor="admin", token=uuid.uuid4().hex)
    assert created and message.key.startswith(f"order-paid-{order.pk}:resend:")


def test_a_rerun_of_a_failed_order_takes_its_stock_again_or_is_refused_when_it_is_gone(product):
    order = declined(product)
    product.refresh_from_db()
    in_stock = product.stock  # the decline gave its item back

    Product.objects.filter(pk=product.pk).update(stock=0)  # sold to someone else meanwhile
    with pytest.raises(OrderRefused):
        order_rerun(order_id=order.pk, actor="admin", payment_method=PaymentMethod.VISA)
    order.refresh_from_db()
    assert order.status == "failed"

    Product.objects.filter(pk=product.pk).update(stock=in_stock)
    assert order_rerun(order_id=order.pk, actor="admin", payment_method=PaymentMethod.VISA) is Rerun.RESTARTED
    product.refresh_from_db()
    assert product.stock == in_stock - 1
