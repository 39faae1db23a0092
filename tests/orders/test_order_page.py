"""The order page says what is true: its status, where its confirmation stands, the address as typed."""

import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from embedded.shopper import cart_fill, checkout_data, element, hidden
from mailer.models import OutboxMessage, OutboxStatus
from orders.models import Order, PaymentMethod
from orders.selectors import order_failure_message
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def confirmation(order):
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    sentence = element(page, "#order-confirmation")
    return element(page, "#order-status").text, sentence.attrs["data-state"], sentence.text


def test_pending_order_says_the_confirmation_will_be_sent(product):
    status, state, text = confirmation(factories.order(product=product))
    assert (status, state) == ("pending", "waiting")
    assert text == "A confirmation will be sent to shopper@example.com once the order is processed."


def test_paid_order_with_the_confirmation_still_queued_does_not_say_it_was_sent(product):
    order = factories.order(product=product)
    order_process(order_id=order.pk)
    status, state, text = confirmation(order)
    assert (status, state) == ("paid", "queued")
    assert text == "A confirmation is on its way to shopper@example.com (not sent yet)."


def test_sent_confirmation_says_it_was_sent(product, smtp):
    order = factories.order(product=product)
    order_process(order_id=order.pk)
    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    assert confirmation(order)[1:] == ("sent", "A confirmation was sent to shopper@example.com.")


def test_failed_confirmation_says_it_could_not_be_sent_and_why(product):
    order = order_process(order_id=factories.order(product=product).pk)
    # What the mailer records when it gives up on a message (mailer.services).
    OutboxMessage.objects.filter(key=order.confirmation_key).update(status=OutboxStatus.FAILED, last_error="550")
    status, state, text = confirmation(order)
    assert (status, state) == ("paid", "failed")
    assert text.startswith("The confirmation could not be sent to shopper@example.com: the mail system did not accept")


def test_declined_order_says_nothing_was_charged_and_where_the_notice_stands(product, smtp):
    order = factories.order(product=product, payment_method=PaymentMethod.DECLINED)
    order_process(order_id=order.pk)
    assert confirmation(order) == (
        "failed",
        "queued",
        "Nothing was charged. A notice is on its way to shopper@example.com (not sent yet).",
    )
    call_command("mailer", "--once", verbosity=0)
    assert confirmation(order)[2] == "Nothing was charged. A notice was sent to shopper@example.com."


@pytest.mark.parametrize("submitted", ["zoe@bücher.example", "zoe@xn--bcher-kva.example"])
def test_an_international_address_is_shown_as_typed_never_as_punycode(product, smtp, submitted):
    """The shopper typed zoe@bücher.example: pages and the email body show that, not xn--bcher-kva,
    whether the browser sent it as typed or, as Chromium does, with its domain in punycode."""
    browser = Client(enforce_csrf_checks=True)
    cart_fill(browser)
    page = browser.get("/checkout/").content.decode()
    form = {
        **checkout_data(token=hidden("token", page), email=submitted),
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
    """Return True when the order page asks a browser without JavaScript to reload it
    (``<noscript><meta http-equiv=refresh content=3></noscript>``; with JavaScript its script polls)."""
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    try:
        return element(page, "#order-refresh [http-equiv=refresh]").attrs["content"] == "3"
    except AssertionError:
        return False


def test_the_page_refreshes_until_the_order_is_processed_and_its_confirmation_sent(product, smtp):
    order = factories.order(product=product)
    assert refreshes(order)  # pending
    order_process(order_id=order.pk)
    assert refreshes(order)  # paid, confirmation queued: the shopper still waits for it
    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    assert not refreshes(order)  # paid and sent: nothing left to wait for


def status(order) -> dict:
    """Return the JSON body of ``order``'s status endpoint (asserting it answers 200, never cached)."""
    response = Client().get(f"/orders/{order.pk}/status.json")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    return response.json()


def test_an_unknown_order_is_a_404_for_its_page_and_its_status():
    unknown = uuid.uuid4()
    page = Client().get(f"/orders/{unknown}/")
    assert page.status_code == 404
    # The shop's own page, not Django's bare "Not Found": a heading and a way back to the catalogue.
    assert element(page.content.decode(), "#error-title").text == "Page not found"
    assert element(page.content.decode(), "#error-home").attrs["href"] == "/"
    # The status is read by the page's script: JSON, never an HTML page.
    status = Client().get(f"/orders/{unknown}/status.json")
    assert status.status_code == 404
    assert status["Content-Type"] == "application/json"
    assert status.json() == {"error": "not found"}


def test_the_status_endpoint_follows_the_order_until_its_confirmation_is_sent(product, smtp):
    order = factories.order(product=product)
    assert status(order) | {"steps": None, "confirmation": None} == {
        "status": "pending",
        "step": "received",
        "label": "Order received: taking payment…",
        "done": False,
        "confirmation_sent": False,
        "steps": None,
        "confirmation": None,
    }
    order_process(order_id=order.pk)
    paid = status(order)
    assert (paid["status"], paid["step"], paid["done"], paid["confirmation_sent"]) == ("paid", "paid", False, False)
    assert [step["state"] for step in paid["steps"]] == ["done", "done", "current"]
    call_command("mailer", "--once", verbosity=0)
    sent = status(order)
    assert (sent["step"], sent["done"], sent["confirmation_sent"]) == ("confirmation_sent", True, True)
    assert sent["label"] == "Paid. Your confirmation email was sent."
    assert sent["confirmation"] == {"state": "sent", "text": "A confirmation was sent to shopper@example.com."}


def test_the_page_shows_the_progress_as_steps(product, smtp):
    order = factories.order(product=product)
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    assert element(page, "#order-label").text == "Order received: taking payment…"
    assert element(page, "#order-steps [data-step=received]").attrs["class"] == "done"
    assert element(page, "#order-steps [data-step=paid]").attrs["aria-current"] == "step"
    assert element(page, "#order-announcement").attrs["aria-live"] == "polite"
    order_process(order_id=order.pk)
    call_command("mailer", "--once", verbosity=0)
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    assert element(page, "#order-steps [data-step=confirmation_sent]").attrs["class"] == "done"
    assert element(page, "#order-label").text == "Paid. Your confirmation email was sent."


def test_a_declined_order_gives_the_reason_in_the_shoppers_words(product):
    order = order_process(order_id=factories.order(product=product, payment_method=PaymentMethod.DECLINED).pk)
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    assert element(page, "#order-label").text == "Payment failed: Your card was declined."
    assert element(page, "#order-steps [data-step=failed]").attrs["class"] == "failed"
    assert "card_declined" not in page
    assert status(order)["label"] == "Payment failed: Your card was declined."


def test_the_page_stops_following_a_slow_order_and_says_it_takes_longer_than_usual(product, settings):
    order = factories.order(product=product)
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    assert "hidden" in element(page, "#order-slow").attrs
    assert int(element(page, "#order-progress").attrs["data-follow-seconds"]) > settings.ORDER_PAGE_WAIT_SECONDS - 5

    placed = timezone.now() - timedelta(seconds=settings.ORDER_PAGE_WAIT_SECONDS + 1)
    Order.objects.filter(pk=order.pk).update(created_at=placed)
    page = Client().get(f"/orders/{order.pk}/").content.decode()
    assert "hidden" not in element(page, "#order-slow").attrs
    assert element(page, "#order-slow").text.startswith("This is taking longer than usual.")
    assert element(page, "#order-progress").attrs["data-follow-seconds"] == "0"
    assert not refreshes(order)


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("payment declined (card_declined)", "Your card was declined."),
        ("payment declined (insufficient_funds)", "Your card has insufficient funds."),
        ("payment declined (stolen_card)", "Your card was declined."),
        ("payment declined (something_new)", "Your payment was declined."),
        ("Sold out: Procfile mug.", "Sold out: Procfile mug."),
    ],
)
def test_failure_reasons_are_shown_in_the_shoppers_words(reason, message):
    assert order_failure_message(reason=reason) == message


def test_the_confirmation_email_links_to_the_order_page(product, smtp, settings):
    settings.SITE_URL = "https://shop.example.com"
    order = order_process(order_id=factories.order(product=product).pk)
    call_command("mailer", "--once", verbosity=0)
    assert len(smtp.messages) == 1
    body = smtp.messages[0].get_content()
    assert f"See your order at any time: https://shop.example.com/orders/{order.pk}/" in body.splitlines()
    assert Client().get(f"/orders/{order.pk}/").status_code == 200


def test_the_decline_notice_gives_the_reason_in_the_shoppers_words_and_links_to_the_order(product, smtp, settings):
    settings.SITE_URL = "http://127.0.0.1:8000"
    order = order_process(order_id=factories.order(product=product, payment_method=PaymentMethod.DECLINED).pk)
    call_command("mailer", "--once", verbosity=0)
    body = smtp.messages[0].get_content()
    assert body.startswith("We could not take payment for this order: Your card was declined. Nothing was charged.")
    assert "card_declined" not in body
    assert f"http://127.0.0.1:8000/orders/{order.pk}/" in body
