"""Pay again after a decline: the failed order stays the shopper's, its page offers a payment
method, and each new try is a payment attempt of its own (its own idempotency key, through the
worker); pressing twice is one try; a paid order is never charged twice."""

import pytest
from django.test import Client

from embedded.shopper import element, element_text, hidden
from orders.models import Charge, Order, PaymentMethod, Product, SandboxCharge
from orders.operations import SHOPPER
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.queues import run_burst_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


@pytest.fixture
def declined(product):
    order = factories.order(product=product, payment_method=PaymentMethod.DECLINED)
    return order_process(order_id=order.pk)


def pay_again(browser: Client, order, method=PaymentMethod.VISA):
    """POST the order page's Pay again form with ``method`` (None: without one), with the CSRF
    token its page gave while the order had failed (a session's token stays the same)."""
    if not hasattr(browser, "csrf"):
        browser.csrf = hidden("csrfmiddlewaretoken", browser.get(f"/orders/{order.pk}/").content.decode())
    data = {"payment_method": method, "csrfmiddlewaretoken": browser.csrf}
    if method is None:
        data.pop("payment_method")
    return browser.post(f"/orders/{order.pk}/pay/", data)


def test_a_declined_order_is_paid_again_with_another_method_as_a_new_attempt(declined, product):
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(f"/orders/{declined.pk}/").content.decode()
    assert element_text(page, "#pay-again-heading") == "Pay again"
    checked = element(page, "#pay-again [checked]")
    assert checked.attrs["value"] == PaymentMethod.VISA  # not the declined card
    stock = Product.objects.get(pk=product.pk).stock

    first, second = pay_again(browser, declined), pay_again(browser, declined)  # a double click: one try
    for response in (first, second):
        assert response.status_code == 303 and response["Location"] == f"/orders/{declined.pk}/"
    order = Order.objects.get(pk=declined.pk)
    assert (order.status, order.payment_method) == ("pending", PaymentMethod.VISA)
    assert Product.objects.get(pk=product.pk).stock == stock - 1  # taken again
    change = order.status_changes.order_by("-id").first()
    assert (change.from_status, change.to_status, change.actor) == ("failed", "pending", SHOPPER)
    said = element(browser.get(f"/orders/{order.pk}/").content.decode(), "#messages").text
    assert said == "Paying again: this page follows the new payment."

    run_burst_worker()
    order.refresh_from_db()
    assert order.status == "paid"
    attempts = list(SandboxCharge.objects.order_by("id").values_list("idempotency_key", "outcome"))
    assert attempts == [(str(order.idempotency_key), "declined"), (f"{order.idempotency_key}:rerun-1", "succeeded")]
    assert Charge.objects.filter(order=order).count() == 1
    assert 'id="pay-again"' not in browser.get(f"/orders/{order.pk}/").content.decode()
    assert pay_again(browser, order).status_code == 303  # a form left open in another tab: nothing
    run_burst_worker()
    assert SandboxCharge.objects.count() == 2 and Charge.objects.count() == 1


def test_paying_again_needs_a_method_from_the_list_and_the_stock_back(declined, product):
    browser = Client(enforce_csrf_checks=True)
    for method, message in ((None, "Choose how to pay."), ("pm_card_bitcoin", "Choose how to pay from the list.")):
        refused = pay_again(browser, declined, method)
        assert refused.status_code == 400
        html = refused.content.decode()
        link = element(html, "#error-summary .error-link")
        assert (link.text, link.attrs["href"]) == (message, "#pay-again-payment_method")
    Product.objects.filter(pk=product.pk).update(stock=0)  # sold to someone else meanwhile
    gone = pay_again(browser, declined)
    assert gone.status_code == 409
    assert "sold out" in element_text(gone.content.decode(), "#error-summary")
    assert Order.objects.get(pk=declined.pk).status == "failed"
