"""The Django admin: staff only; orders with their lines, charges, attempts, history and emails; the outbox;
the staff's actions (re-run processing, resend confirmation, retry email); the audit trail stays as written."""

import re
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import django_rq
import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from embedded.shopper import element, element_text, hidden
from mailer.engine import outbox_send_due
from mailer.models import OutboxMessage
from mailer.services import outbox_message_claim, outbox_message_release, outbox_message_retry
from orders.models import Charge, Order, OrderStatusChange, PaymentMethod, Product, SandboxCharge
from orders.operations import Rerun
from orders.services import order_process
from tests import factories
from tests.support.databases import ALL_DATABASES
from tests.support.queues import queued_job_ids, run_burst_worker

pytestmark = pytest.mark.django_db(transaction=True, databases=ALL_DATABASES)


def test_admin_is_for_staff_only(client, product):
    assert client.get("/admin/orders/order/").status_code == 302  # to the login page
    user = get_user_model().objects.create_user("shopper", password="pw-123456789")
    client.force_login(user)
    assert client.get("/admin/orders/order/").status_code == 302  # not staff: login again


def test_staff_sees_orders_with_lines_charge_and_outbox(client, product):
    order = factories.order(product=product, quantity=2, email="a@example.com")
    order_process(order_id=order.pk)
    client.force_login(factories.staff_user(superuser=True))
    page = client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "Procfile mug" in page and ">2<" in page.replace(" ", "")
    assert order.charge.gateway_charge_id in page
    assert element_text(client.get("/admin/orders/order/").content.decode(), ".field-total_display") == "€24.00"
    assert f"order-paid-{order.pk}" in client.get("/admin/mailer/outboxmessage/").content.decode()
    assert "Procfile mug" in client.get("/admin/orders/product/").content.decode()


def test_staff_find_an_order_by_the_request_id_that_placed_it(staff, product):
    placed = [factories.order(product=product, email=f"{n}@example.com", request_id=f"checkout-{n * 32}") for n in "ab"]
    page = staff.get("/admin/orders/order/?" + urlencode({"q": placed[0].request_id})).content.decode()
    assert element_text(page, ".paginator").startswith("1 order")
    assert element_text(page, ".field-reference") == placed[0].reference
    detail = staff.get(f"/admin/orders/order/{placed[0].pk}/change/").content.decode()
    assert element_text(detail, ".field-request_id .readonly") == placed[0].request_id


@pytest.fixture
def staff(client):
    """The test client, logged in as a superuser."""
    client.force_login(factories.staff_user(superuser=True))
    return client


def test_every_amount_in_the_admin_is_shown_formatted_in_its_currency(staff):
    product = factories.product(sku="yen-mug", name="Yen mug", price=500, currency="JPY")
    order = factories.order(product=product, quantity=2, email="a@example.com")
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


# --- Pages: branding, the order's page, lists ---------------------------------------------------


def test_the_admin_is_branded_formation_admin(staff):
    page = staff.get("/admin/").content.decode()
    assert element_text(page, "#site-name") == "Formation admin"
    assert re.search(r"<title>([^<]*)</title>", page).group(1) == "Run the shop | Formation admin"


def declined_order(email="declined@example.com") -> Order:
    """Return an order whose payment the sandbox declined (failed), processed in this process."""
    order = factories.order(email=email, payment_method=PaymentMethod.DECLINED)
    return order_process(order_id=order.pk)


def test_a_failed_order_shows_its_declined_attempt_history_emails_and_a_link_to_its_page(staff):
    order = declined_order()
    page = staff.get(f"/admin/orders/order/{order.pk}/change/").content.decode()

    attempt = SandboxCharge.objects.get()
    assert attempt.charge_id in element_text(page, "#payment-attempts")
    row = f"#attempt-{attempt.charge_id}"
    assert [element_text(page, f"{row} .{c}") for c in ("amount", "outcome", "decline-code")] == [
        "€12.00",
        "Declined",
        "card_declined",
    ]
    history = element_text(page, "#status_changes-group")
    assert "Pending" in history and "Failed" in history and "payment declined (card_declined)" in history
    message = OutboxMessage.objects.get(key=order.confirmation_key)
    assert element_text(page, f"#email-{message.pk} .message-id") == message.message_id
    assert element_text(page, f"#email-{message.pk} .kind") == "decline notice"
    assert element(page, "#shopper-link").attrs["href"] == reverse("order-detail", args=[order.pk])
    assert element_text(page, "#shopper-link") == "View as shopper"


def test_orders_are_filtered_by_status_and_date_and_found_by_email_or_id(staff, product):
    paid = factories.order(product=product, email="paid@example.com")
    order_process(order_id=paid.pk)
    failed = declined_order()

    def listed(query: str) -> set[str]:
        page = staff.get(f"/admin/orders/order/{query}").content.decode()
        return {str(o.pk) for o in (paid, failed) if f"/admin/orders/order/{o.pk}/change/" in page}

    assert listed("?status__exact=failed") == {str(failed.pk)}
    assert listed("?status__exact=paid") == {str(paid.pk)}
    # The date filter's own "Today" and a range starting tomorrow, as its links write them (aware).
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)
    assert listed("?" + urlencode({"created_at__gte": today, "created_at__lt": tomorrow})) == {
        str(paid.pk),
        str(failed.pk),
    }
    assert listed("?" + urlencode({"created_at__gte": tomorrow})) == set()
    assert listed("?q=paid@example.com") == {str(paid.pk)}
    assert listed(f"?q={failed.pk}") == {str(failed.pk)}


def test_the_outbox_list_shows_status_attempts_and_a_shortened_last_error(staff):
    error = "SMTP 451: " + "the server is busy, " * 30
    OutboxMessage.objects.create(
        key="k-" + "x" * 150,
        to_email="a@example.com",
        subject="s",
        body="b",
        status="failed",
        attempts=3,
        last_error=error,
    )
    page = staff.get("/admin/mailer/outboxmessage/").content.decode()
    assert element_text(page, "#result_list .field-status") == "Failed"
    assert element_text(page, "#result_list .field-attempts") == "3"
    cell = element(page, "#result_list .field-error_display .shortened")
    assert cell.attrs["title"] == error
    assert len(element_text(page, "#result_list .field-error_display")) <= 40
    assert len(element_text(page, "#result_list .field-key_display")) <= 24


def test_the_django_rq_dashboard_is_linked_from_the_admin_index_and_loads(staff, client):
    index = staff.get("/admin/").content.decode()
    assert 'href="/admin/django_rq/dashboard/"' in index
    response = staff.get("/admin/django_rq/dashboard/")
    assert response.status_code == 200
    assert "default" in element_text(response.content.decode(), "#content")


def test_the_django_rq_dashboard_is_for_staff_only(client):
    assert client.get("/admin/django_rq/dashboard/").status_code == 302  # to the login page


# --- The audit trail: nobody edits or deletes it ---------------------------------------------------


def test_charges_sandbox_charges_and_the_status_history_cannot_be_changed_or_deleted_even_by_a_superuser(
    staff, product
):
    order = factories.order(product=product, email="a@example.com")
    order_process(order_id=order.pk)
    sandbox = SandboxCharge.objects.get()

    assert staff.get("/admin/orders/sandboxcharge/add/").status_code == 403
    assert staff.post(f"/admin/orders/sandboxcharge/{sandbox.pk}/delete/", {"post": "yes"}).status_code == 403
    staff.post(f"/admin/orders/sandboxcharge/{sandbox.pk}/change/", {"amount": "1", "outcome": "declined"})
    staff.post(
        "/admin/orders/sandboxcharge/", {"action": "delete_selected", "_selected_action": [sandbox.pk], "post": "yes"}
    )
    assert SandboxCharge.objects.values_list("amount", "outcome").get() == (1200, "succeeded")
    assert "delete_selected" not in staff.get("/admin/orders/sandboxcharge/").content.decode()

    page = staff.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "DELETE" not in page  # no inline row offers a delete box
    assert "charge-0-gateway_charge_id" not in page and "status_changes-0-reason" not in page  # no inputs
    assert staff.post(f"/admin/orders/order/{order.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (Charge.objects.count(), OrderStatusChange.objects.count(), Order.objects.count()) == (1, 1, 1)

    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get(username="admin")
    sandbox_admin = admin.site._registry[SandboxCharge]
    assert not any(check(request) for check in (sandbox_admin.has_add_permission, sandbox_admin.has_change_permission))
    assert not sandbox_admin.has_delete_permission(request)
    for inline in inlines_of(Order, Charge, OrderStatusChange):
        assert not inline.has_add_permission(request, order)
        assert not inline.has_change_permission(request, order)
        assert not inline.has_delete_permission(request, order)


def inlines_of(parent, *models):
    """Return the OrderAdmin inline instances for ``models``."""
    parent_admin = admin.site._registry[parent]
    return [inline(parent, admin.site) for inline in parent_admin.inlines if inline.model in models]


# --- Actions -----------------------------------------------------------------------------------


def run_action(client, model: str, action: str, pks, **extra):
    """POST an admin action on the changelist of ``model`` (``app/model``); return the followed response."""
    data = {"action": action, ACTION_CHECKBOX_NAME: [str(pk) for pk in pks], **extra}
    return client.post(f"/admin/{model}/", data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def history(order) -> list[tuple[str, str, str, str]]:
    return list(order.status_changes.values_list("from_status", "to_status", "reason", "actor"))


def test_rerun_processing_of_a_paid_order_does_nothing_and_says_so(staff, product):
    order = factories.order(product=product, email="a@example.com")
    order_process(order_id=order.pk)
    django_rq.get_queue("default").empty()

    response = run_action(staff, "orders/order", "rerun_processing", [order.pk])
    assert messages_of(response) == [f"Order {order.pk} is paid already: nothing to do (it is never charged twice)."]
    assert queued_job_ids() == []
    assert history(order) == [("pending", "paid", "", "")]
    assert (Charge.objects.count(), SandboxCharge.objects.count()) == (1, 1)


def test_rerun_processing_of_a_stuck_order_twice_enqueues_it_once_and_charges_it_once(staff, product):
    order = factories.order(product=product, email="a@example.com")
    django_rq.get_queue("default").empty()  # Redis lost the job: the order is stuck in pending

    for _ in range(2):
        response = run_action(staff, "orders/order", "rerun_processing", [order.pk])
        assert messages_of(response) == [f"Order {order.pk} is pending: processing enqueued again."]
    assert queued_job_ids() == [order.job_id]
    assert history(order) == [("pending", "pending", "re-run processing", "admin")] * 2

    run_burst_worker()
    run_action(staff, "orders/order", "rerun_processing", [order.pk])
    run_burst_worker()
    order.refresh_from_db()
    assert order.status == "paid"
    assert (Charge.objects.count(), SandboxCharge.objects.count()) == (1, 1)


def test_rerun_processing_of_a_failed_order_asks_for_a_method_and_is_a_new_attempt_never_a_second_charge(staff):
    order = declined_order()
    django_rq.get_queue("default").empty()

    # The bulk action never charges the declined card again: it says where to choose a method.
    response = run_action(staff, "orders/order", "rerun_processing", [order.pk])
    assert messages_of(response) == [f"Order {order.pk} {Rerun.NEEDS_METHOD}."]
    assert Order.objects.get(pk=order.pk).status == "failed" and queued_job_ids() == []

    def retry(method):
        page = staff.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
        form = {"payment_method": method, "csrfmiddlewaretoken": hidden("csrfmiddlewaretoken", page)}
        return staff.post(f"/admin/orders/order/{order.pk}/rerun/", form, follow=True)

    assert messages_of(retry("")) == ["The form was incomplete: nothing was done. Try again."]
    assert Order.objects.get(pk=order.pk).status == "failed"
    response = retry(PaymentMethod.DECLINED)  # staff chose it: the same card, knowingly
    order.refresh_from_db()
    assert messages_of(response) == [f"Order {order.reference} {Rerun.RESTARTED}."]
    assert (order.status, order.failure_reason) == ("pending", "")
    assert history(order)[-1] == (
        "failed",
        "pending",
        "re-run processing (Test card (declined)): a new payment attempt",
        "admin",
    )
    run_burst_worker()  # the sandbox declines the same card again, under the attempt's own key
    order.refresh_from_db()
    assert order.status == "failed"
    keys = list(SandboxCharge.objects.order_by("id").values_list("idempotency_key", "outcome"))
    assert keys == [(str(order.idempotency_key), "declined"), (f"{order.idempotency_key}:rerun-1", "declined")]
    page = staff.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    for attempt in SandboxCharge.objects.all():
        assert element_text(page, f"#attempt-{attempt.charge_id} .decline-code") == "card_declined"

    # Staff retry with the card that succeeds, twice (a double click): one charge.
    for _ in range(2):
        retry(PaymentMethod.VISA)
        run_burst_worker()
    order.refresh_from_db()
    assert (order.status, order.payment_method) == ("paid", PaymentMethod.VISA)
    assert Charge.objects.filter(order=order).count() == 1
    assert SandboxCharge.objects.filter(outcome="succeeded").count() == 1
    assert OutboxMessage.objects.filter(key=f"order-paid-{order.pk}").count() == 1


def test_resend_confirmation_asks_then_queues_one_new_message_per_request_with_a_new_message_id(staff, product, smtp):
    order = factories.order(product=product, email="a@example.com")
    order_process(order_id=order.pk)
    assert outbox_send_due() == 1

    question = run_action(staff, "orders/order", "resend_confirmation", [order.pk])
    page = question.content.decode()
    assert order.email in element_text(page, "#resend-orders")
    assert OutboxMessage.objects.count() == 1  # asking sends nothing
    token = hidden("token", page)

    for _ in range(2):  # the same form sent twice: one message
        run_action(staff, "orders/order", "resend_confirmation", [order.pk], token=token, confirm="yes")
    assert OutboxMessage.objects.count() == 2
    run_action(staff, "orders/order", "resend_confirmation", [order.pk], token=uuid.uuid4().hex, confirm="yes")
    assert OutboxMessage.objects.count() == 3
    assert outbox_send_due() == 2

    ids = smtp.message_ids()
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [m["To"] for m in smtp.messages] == [order.email] * 3
    assert smtp.messages[1]["Subject"] == smtp.messages[0]["Subject"]
    notes = [reason for _, _, reason, actor in history(order) if actor == "admin"]
    assert len(notes) == 2 and all(reason.startswith("confirmation resent") for reason in notes)
    assert (
        element_text(staff.get(f"/admin/orders/order/{order.pk}/change/").content.decode(), "#order-emails").count(
            "confirmation (resent)"
        )
        == 2
    )


def test_resend_confirmation_of_a_pending_order_sends_nothing(staff, product):
    order = factories.order(product=product, email="a@example.com")
    response = run_action(
        staff, "orders/order", "resend_confirmation", [order.pk], token=uuid.uuid4().hex, confirm="yes"
    )
    assert messages_of(response) == [f"Order {order.pk} is pending: its confirmation goes out once it is processed."]
    assert not OutboxMessage.objects.exists()


def test_retry_email_requeues_a_failed_message_once_and_leaves_others_alone(staff, smtp):
    old = timezone.now() - timedelta(days=10)
    failed = OutboxMessage.objects.create(
        key="failed", to_email="a@example.com", subject="s", body="b", status="failed", attempts=9
    )
    OutboxMessage.objects.filter(pk=failed.pk).update(
        created_at=old, unsettled_attempts=5, gave_up=True, last_error="gave up: …"
    )
    sent = OutboxMessage.objects.create(
        key="sent", to_email="b@example.com", subject="s", body="b", status="sent", sent_at=timezone.now()
    )

    response = run_action(staff, "mailer/outboxmessage", "retry_email", [failed.pk, sent.pk])
    assert messages_of(response) == [
        "1 message(s) queued again; the mailer sends them now.",
        "1 message(s) left alone: only failed messages are retried.",
    ]
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.unsettled_attempts, failed.gave_up) == ("pending", 0, 0, False)
    assert failed.due_at <= timezone.now() and failed.requeued_at is not None
    response = run_action(staff, "mailer/outboxmessage", "retry_email", [failed.pk])  # a second click
    assert messages_of(response) == ["1 message(s) left alone: only failed messages are retried."]
    assert (
        LogEntry.objects.filter(object_id=str(failed.pk), change_message="Retried: queued again, due now.").count() == 1
    )

    assert outbox_send_due() == 1
    assert smtp.message_ids() == [failed.message_id]


def test_a_retried_message_gets_the_whole_give_up_time_again(settings):
    """A transient failure after a retry does not fail it at once for its age (MAILER_GIVE_UP_AFTER)."""
    message = OutboxMessage.objects.create(key="k", to_email="a@example.com", subject="s", body="b", status="failed")
    OutboxMessage.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(days=10))
    assert outbox_message_retry(message_id=message.pk)
    claimed = outbox_message_claim()
    outbox_message_release(message=claimed, error="SMTP 451: busy", permanent=False)
    message.refresh_from_db()
    assert (message.status, message.gave_up) == ("pending", False)


def test_the_actions_need_the_change_permission(client, product):
    order = factories.order(product=product, email="a@example.com")
    viewer = factories.staff_user(username="viewer")
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", "view_outboxmessage"]))
    client.force_login(viewer)

    page = client.get("/admin/orders/order/").content.decode()
    assert "rerun_processing" not in page and "resend_confirmation" not in page
    run_action(client, "orders/order", "rerun_processing", [order.pk])
    assert not OrderStatusChange.objects.exists()
    assert "retry_email" not in client.get("/admin/mailer/outboxmessage/").content.decode()


def test_outbox_messages_cannot_be_deleted_even_by_a_superuser(staff):
    sent = OutboxMessage.objects.create(
        key="sent", to_email="a@example.com", subject="s", body="b", status="sent", sent_at=timezone.now()
    )
    assert staff.post(f"/admin/mailer/outboxmessage/{sent.pk}/delete/", {"post": "yes"}).status_code == 403
    staff.post(
        "/admin/mailer/outboxmessage/", {"action": "delete_selected", ACTION_CHECKBOX_NAME: [sent.pk], "post": "yes"}
    )
    assert OutboxMessage.objects.filter(pk=sent.pk).exists()
    assert "delete_selected" not in staff.get("/admin/mailer/outboxmessage/").content.decode()


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/admin/orders/order/", "rerun_processing"),
        ("/admin/orders/order/", "resend_confirmation"),
        ("/admin/mailer/outboxmessage/", "retry_email"),
    ],
)
@pytest.mark.parametrize("selected", ["not-a-uuid", "\x00"])
def test_an_action_on_a_selection_that_is_not_ids_is_refused_with_a_message(staff, path, action, selected):
    response = staff.post(path, {"action": action, ACTION_CHECKBOX_NAME: [selected], "index": "0"}, follow=True)
    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == [
        "Select rows from the list, then pick an action."
    ]


def test_the_outbox_list_tells_a_resend_from_its_original(staff):
    original = "order-paid-dbf9a25f-1910-4c39-9c8e-2b1f0f1c3a11"
    for key in (original, f"{original}:resend:3f2a9c"):
        OutboxMessage.objects.create(key=key, to_email="a@example.com", subject="s", body="b")
    page = staff.get("/admin/mailer/outboxmessage/").content.decode()
    shown = re.findall(r'class="field-key_display"><a [^>]*><span class="shortened" title="[^"]*">([^<]*)<', page)
    assert len(shown) == 2 and len(set(shown)) == 2, shown
    assert all(len(text) <= 24 for text in shown)
