"""The order page says what is true: its status, where its confirmation stands, the address as typed."""

import uuid

import pytest
from django.core.management import call_command
from django.test import Client

from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order, PaymentMethod
from orders.services import LineRequest, order_create, order_process
from tests.support import ALL_DATABASES, cart_fill, checkout_data, element, hidden

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def new_order(product, email="shopper@example.com", **kwargs):
    order, _ = order_create(email=email, lines=[LineRequest(product.pk, 1)], idempotency_key=uuid.uuid4(), **kwargs)
    return order


def confirmation(order):
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    sentence = element(page, "#order-confirmation")
    return element(page, "#order-status").text, sentence.attrs["data-state"], sentence.text


def test_pending_order_says_the_confirmation_will_be_sent(product):
    status, state, text = confirmation(new_order(product))
    assert (status, state) == ("pending", "waiting")
    assert text == "A confirmation will be sent to shopper@example.com once the order is processed."


def test_paid_order_with_the_confirmation_still_queued_does_not_say_it_was_sent(product):
    order = new_order(product)
    order_process(order_id=order.pk)
    status, state, text = confirmation(order)
    assert (status, state) == ("paid", "queued")
    assert text == "A confirmation is on its way to shopper@example.com (not sent yet)."


def test_sent_confirmation_says_it_was_sent(product, smtp):
    order = new_order(product)
    order_process(order_id=order.pk)
    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    assert confirmation(order)[1:] == ("sent", "A confirmation was sent to shopper@example.com.")


def test_failed_confirmation_says_it_could_not_be_sent_and_why(product):
    order = order_process(order_id=new_order(product).pk)
    # What the mailer records when it gives up on a message (mailer.services).
    OutboxMessage.objects.filter(key=order.confirmation_key).update(status=OutboxStatus.FAILED, last_error="550")
    status, state, text = confirmation(order)
    assert (status, state) == ("paid", "failed")
    assert text.startswith("The confirmation could not be sent to shopper@example.com: the mail system did not accept")


def test_declined_order_says_nothing_was_charged_and_where_the_notice_stands(product, smtp):
    order = new_order(product, payment_method=PaymentMethod.DECLINED)
    order_process(order_id=order.pk)
    assert confirmation(order) == (
        "failed",
        "queued",
        "Nothing was charged. A notice is on its way to shopper@example.com (not sent yet).",
    )
    call_command("mailer", "--once", verbosity=0)
    assert confirmation(order)[2] == "Nothing was charged. A notice was sent to shopper@example.com."


def test_an_international_address_is_shown_as_typed_never_as_punycode(product, smtp):
    """The shopper typed zoe@bücher.example: pages and the email body show that, not xn--bcher-kva."""
    browser = Client(enforce_csrf_checks=True)
    cart_fill(browser)
    page = browser.get("/checkout/").content.decode()
    form = {
        **checkout_data(token=hidden("token", page), email="zoe@bücher.example"),
        "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page),
    }
    placed = browser.post("/checkout/", form)
    assert placed.status_code == 303
    assert element(browser.get(placed["Location"]).content.decode(), "#order-email").text == "zoe@bücher.example"

    order = Order.objects.get()
    order_process(order_id=order.pk)
    call_command("mailer", "--once", verbosity=0)
    assert element(browser.get(placed["Location"]).content.decode(), "#order-email").text == "zoe@bücher.example"
    assert len(smtp.messages) == 1
    message = smtp.messages[0]
    assert "xn--" not in message["Subject"] + message.get_content()
    # The envelope and the To header must be ASCII for a server without SMTPUTF8 (RFC 5890 A-labels);
    # the shopper's mail client shows them decoded.
    assert message["To"].addresses[0].domain in ("bücher.example", "xn--bcher-kva.example")
    # The completed checkout shows the same address as typed on its order page.
    assert element(browser.get("/checkout/").content.decode(), "#order-link").attrs["href"] == placed["Location"]


def refreshes(order) -> bool:
    """Return True when the order page asks the browser to reload it (``<meta http-equiv=refresh>``)."""
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    try:
        return element(page, "[http-equiv=refresh]").attrs["content"] == "2"
    except AssertionError:
        return False


def test_the_page_refreshes_until_the_order_is_processed_and_its_confirmation_sent(product, smtp):
    order = new_order(product)
    assert refreshes(order)  # pending
    order_process(order_id=order.pk)
    assert refreshes(order)  # paid, confirmation queued: the shopper still waits for it
    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    assert not refreshes(order)  # paid and sent: nothing left to wait for
