"""Checkout refuses an address the mailer could never deliver, before anything is created or charged;
an internationalised domain (IDN) goes through to the SMTP server in its punycode form."""

import pytest
from django.test import Client

from embedded.shopper import cart_fill, checkout_data, element, hidden
from mailer.engine import outbox_send_due
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order, OrderLine, SandboxCharge
from tests.support.addresses import UNDELIVERABLE
from tests.support.databases import ALL_DATABASES
from tests.support.queues import run_burst_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def place(email: str):
    """Fetch the checkout page and post it with its own token and CSRF cookie; return the response."""
    browser = Client(enforce_csrf_checks=True)
    cart_fill(browser)
    page = browser.get("/checkout/")
    assert page.status_code == 200
    data = checkout_data(token=hidden("token", page.content.decode()), email=email)
    data["csrfmiddlewaretoken"] = page.cookies["csrftoken"].value
    return browser.post("/checkout/", data)


def email_errors(response) -> list[str]:
    """Return the message shown next to the ``email`` field, linked from the error summary."""
    html = response.content.decode()
    message = element(html, "#id_email-error").text.removeprefix("Error: ")
    assert element(html, "#error-summary .error-link").attrs["href"] == "#id_email"
    return [message]


@pytest.mark.parametrize("address", UNDELIVERABLE.values(), ids=UNDELIVERABLE.keys())
def test_an_undeliverable_address_is_a_400_naming_email_and_nothing_is_created(product, address):
    response = place(address)
    assert response.status_code == 400
    assert email_errors(response), response.content.decode()
    assert Order.objects.count() == OrderLine.objects.count() == SandboxCharge.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


def test_an_idn_address_is_charged_and_mailed_to_its_punycode_domain(product, smtp):
    recipients = []

    async def record_rcpt(server, session, envelope, address, rcpt_options):
        recipients.append(address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    smtp.handle_RCPT = record_rcpt
    response = place("zoe@bücher.example")
    assert response.status_code == 303
    run_burst_worker()
    order = Order.objects.get()
    assert order.status == "paid"
    assert order.email == "zoe@bücher.example"  # stored as typed
    assert outbox_send_due() == 1
    assert OutboxMessage.objects.get().status == OutboxStatus.SENT
    assert recipients == ["zoe@xn--bcher-kva.example"]
    assert smtp.messages[0]["To"] == "zoe@xn--bcher-kva.example"
