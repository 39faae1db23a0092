"""Admin for the catalogue and orders (staff only, Django admin's own permission checks).

Orders are read-only; staff act on them through two actions that call orders.operations
("Re-run processing", "Resend confirmation"), which need the change permission on orders.
Charges, the sandbox gateway's ledger and the status history are an audit trail: nobody, not
even a superuser, adds, changes or deletes them here.

Every amount is shown formatted in its currency and prices are typed in major units ("9.50" EUR,
"500" JPY); ``orders.money`` converts to and from the minor units that are stored.
"""

import re
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from core.admin import BoundedChangeListMixin, ReadOnlyAuditMixin
from core.errors import ApplicationError
from mailer.models import OutboxMessage
from orders.models import (
    LOW_STOCK,
    ORDER_NUMBER_PREFIX,
    Charge,
    Order,
    OrderLine,
    OrderStatus,
    OrderStatusChange,
    PaymentMethod,
    Product,
    SandboxCharge,
)
from orders.money import InvalidAmount, format_money, to_major, to_minor
from orders.operations import (
    ConfirmationNotSent,
    StaffActionRefused,
    order_confirmation_resend,
    order_note_add,
    order_rerun,
    order_ship,
)
from orders.payments import GATEWAY_DB
from orders.selectors import orders_payment_unsettled


def product_pictures() -> list[str]:
    """Return the static files under ``products/`` (their unhashed paths, sorted), as the
    staticfiles finders see them: what a product's ``image`` may name."""
    found = set()
    for finder in finders.get_finders():
        for name, _ in finder.list([]):
            if name.startswith("products/"):
                found.add(name)
    return sorted(found)


# An order number as staff type it: the shop's prefix (any case, the dash optional), then digits.
ORDER_REFERENCE = re.compile(rf"{re.escape(ORDER_NUMBER_PREFIX.rstrip('-'))}-?(\d{{1,18}})", re.IGNORECASE)


class ProductAdminForm(forms.ModelForm):
    """The product form with ``price`` in major units of the chosen currency.

    "9.50" EUR is stored as 950, "500" JPY as 500, "1.250" KWD as 1250; "9.50" JPY and "1.2345" KWD
    are refused on the price field (orders.money.to_minor says why). The change form shows the
    stored price in major units with the currency's decimals ("9.50", "500", "1.250").
    """

    # max_digits bounds the work done on what is typed; decimal places depend on the currency.
    price = forms.DecimalField(
        max_digits=15,
        help_text="In major units of the currency: 9.50 for €9.50, 500 for ¥500, 1.250 for KWD 1.250.",
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "description", "price", "currency", "stock", "is_active", "image", "image_alt"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["price"] = to_major(self.instance.price, self.instance.currency)
        # The pictures the static files hold (static/products/): a picture is part of a release,
        # served under its hashed name like every static file.
        self.fields["image"] = forms.ChoiceField(
            choices=[("", "No picture"), *((path, path) for path in product_pictures())],
            required=False,
            label="Picture",
            help_text="A picture from the release's static files (static/products/).",
        )

    def clean_image_alt(self) -> str:
        """Require the picture's text when a picture is chosen (WCAG 1.1.1: a picture says what it shows)."""
        alt = self.cleaned_data.get("image_alt", "").strip()
        if self.cleaned_data.get("image") and not alt:
            raise forms.ValidationError("Say in words what the picture shows, for those who cannot see it.")
        return alt

    def clean(self):
        """Convert ``price`` to minor units of ``currency``; errors go on the price field."""
        cleaned = super().clean()
        price, currency = cleaned.get("price"), cleaned.get("currency")
        if price is None or not currency:
            cleaned.pop("price", None)  # never hand the model a price in major units
            return cleaned  # the field's own error is shown already
        try:
            minor = to_minor(price, currency)
        except InvalidAmount as exc:
            self.add_error("price", exc.message)
            return cleaned
        # The column's range as Django's own validators see it (PostgreSQL integer: 2147483647).
        highest = connection.ops.integer_field_range(Product._meta.get_field("price").get_internal_type())[1]
        if minor > highest:
            self.add_error("price", f"Enter at most {format_money(highest, currency)}.")
            return cleaned
        cleaned["price"] = minor
        return cleaned


class StockFilter(admin.SimpleListFilter):
    """The products list's "Stock" filter: low (at most LOW_STOCK units, the storefront's "Only N
    left", sold out included) or sold out; the admin index's summary links to "low"."""

    title = "stock"
    parameter_name = "stock"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [("low", f"Low ({LOW_STOCK} or fewer)"), ("out", "Sold out")]

    def queryset(self, request, queryset):
        if self.value() == "low":
            return queryset.filter(stock__lte=LOW_STOCK)
        if self.value() == "out":
            return queryset.filter(stock=0)
        return queryset


@admin.register(Product)
class ProductAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price_display", "stock", "is_active"]
    list_filter = ["is_active", StockFilter, "currency"]
    search_fields = ["sku", "name"]

    @admin.display(description="price", ordering="price")
    def price_display(self, obj: Product) -> str:
        return format_money(obj.price, obj.currency)


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    fields = readonly_fields = ["product", "quantity", "unit_price_display", "amount_display"]

    @admin.display(description="unit price")
    def unit_price_display(self, obj: OrderLine) -> str:
        return format_money(obj.unit_price, obj.order.currency)

    @admin.display(description="amount")
    def amount_display(self, obj: OrderLine) -> str:
        return format_money(obj.amount, obj.order.currency)


class ChargeInline(ReadOnlyAuditMixin, admin.StackedInline):
    model = Charge
    extra = 0
    can_delete = False
    fields = readonly_fields = ["gateway_charge_id", "amount_display", "currency", "created_at"]

    @admin.display(description="amount")
    def amount_display(self, obj: Charge) -> str:
        return format_money(obj.amount, obj.currency)


class OrderStatusChangeInline(ReadOnlyAuditMixin, admin.TabularInline):
    model = OrderStatusChange
    extra = 0
    can_delete = False
    verbose_name_plural = "status history"
    fields = readonly_fields = ["created_at", "from_status", "to_status", "reason", "actor"]


def order_payment_attempts(order: Order):
    """Return the sandbox gateway's records of every payment attempt of ``order``, oldest first.

    Read from the gateway's own ledger (declined attempts leave no Charge): the order's
    idempotency key and each re-run's key, which starts with it (orders.services.order_payment_key).
    """
    key = str(order.idempotency_key)
    return (
        SandboxCharge.objects.using(GATEWAY_DB)
        .filter(Q(idempotency_key=key) | Q(idempotency_key__startswith=f"{key}:"))
        .order_by("created_at", "id")
    )


def order_emails(order: Order):
    """Return the outbox messages about ``order``: its confirmation (paid or failed) and every resend."""
    keys = [f"order-{status}-{order.pk}" for status in (OrderStatus.PAID, OrderStatus.FAILED)]
    query = Q(key__in=keys)
    for key in keys:
        query |= Q(key__startswith=f"{key}:")
    return OutboxMessage.objects.filter(query).order_by("created_at", "id")


def _table(columns: list[tuple[str, str]], rows: list[tuple[str, tuple]], empty: str) -> str:
    """Render a small read-only HTML table: ``columns`` are (class, heading), ``rows`` (row id, values).

    Each cell carries its column's class and each row its id, so a page (and a test) can point at one value.
    """
    if not rows:
        return empty
    head = format_html_join("", "<th scope='col'>{}</th>", ((heading,) for _, heading in columns))
    body = format_html_join(
        "",
        '<tr id="{}">{}</tr>',
        (
            (row_id, format_html_join("", '<td class="{}">{}</td>', zip([c for c, _ in columns], values, strict=True)))
            for row_id, values in rows
        ),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def _email_kind(key: str) -> str:
    """Name an order email for staff from its outbox key ("order-<status>-<id>[:resend:<token>]")."""
    kind = "decline notice" if key.startswith(f"order-{OrderStatus.FAILED}-") else "confirmation"
    return f"{kind} (resent)" if ":resend:" in key else kind


class PaymentFilter(admin.SimpleListFilter):
    """The orders list's "Payment" filter: orders whose payment call had no answer (retried with
    backoff), and those of them unsettled past settings.PAYMENT_UNSETTLED_AFTER
    (orders.selectors.orders_payment_unsettled), which staff check at the provider."""

    title = "payment"
    parameter_name = "payment"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [("unsettled", "Unsettled (no answer from the provider)"), ("timed-out", "Had a call with no answer")]

    def queryset(self, request, queryset):
        if self.value() == "unsettled":
            return queryset.filter(pk__in=orders_payment_unsettled().values("pk"))
        if self.value() == "timed-out":
            return queryset.filter(payment_timeouts__gt=0)
        return queryset


class ShippingFilter(admin.SimpleListFilter):
    """The orders list's "Shipping" filter: paid orders to ship, and shipped ones; the admin
    index's summary links to "to ship"."""

    title = "shipping"
    parameter_name = "shipping"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [("to-ship", "To ship (paid, not shipped)"), ("shipped", "Shipped")]

    def queryset(self, request, queryset):
        if self.value() == "to-ship":
            return queryset.filter(status=OrderStatus.PAID, shipped_at__isnull=True)
        if self.value() == "shipped":
            return queryset.filter(shipped_at__isnull=False)
        return queryset


@admin.register(Order)
class OrderAdmin(ReadOnlyAuditMixin, BoundedChangeListMixin, admin.ModelAdmin):
    """Orders are read-only here: status changes go through orders.services, never a form.

    The actions need the change permission on orders (``operate``): the admin shows orders
    read-only to everybody, so has_change_permission cannot be what grants them.
    """

    # Order.get_absolute_url would add Django's "View on site" button beside the "View as shopper"
    # link the page already has (#shopper-link): one link to the shopper's page.
    view_on_site = False

    list_display = ["reference", "email", "status", "total_display", "failure_reason", "created_at"]
    list_filter = ["status", PaymentFilter, ShippingFilter, "currency", ("created_at", admin.DateFieldListFilter)]
    # "=": a request id (from a log line or a shopper's X-Request-ID) finds its order exactly; a
    # product's name finds the orders with a line of it.
    # "F-1001" finds the order of that number (get_search_results).
    search_fields = ["id", "email", "=request_id", "lines__product__name"]
    # No change permission: Django shows every field read-only, so no readonly_fields.
    fields = [
        "reference",
        "id",
        "shopper_link",
        "idempotency_key",
        "request_id",
        "email",
        "status",
        "currency",
        "total_display",
        "payment_method",
        "failure_reason",
        "created_at",
        "updated_at",
        "payment_attempts",
        "payment_timeouts",
        "payment_retry_at",
        "shipped_at",
        "tracking_reference",
        "emails",
    ]
    inlines = [OrderLineInline, ChargeInline, OrderStatusChangeInline]
    actions = ["rerun_processing", "resend_confirmation"]

    def get_inline_instances(self, request, obj=None):
        """The inlines, leaving out the read-only ones with no row for ``obj``: a failed order's
        page showed a "Charges" heading over nothing."""
        inlines = super().get_inline_instances(request, obj)
        if obj is None:
            return inlines
        return [
            inline
            for inline in inlines
            if not isinstance(inline, ReadOnlyAuditMixin) or inline.get_queryset(request).filter(order=obj).exists()
        ]

    @admin.display(description="order", ordering="number")
    def reference(self, obj: Order) -> str:
        return obj.reference

    def get_search_results(self, request, queryset, search_term):
        """Django's search, and an order number as people write it ("F-1001", "f-1001", "F1001")
        finds that order alone."""
        if match := ORDER_REFERENCE.fullmatch(search_term.strip()):
            return queryset.filter(number=int(match[1])), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="total", ordering="total")
    def total_display(self, obj: Order) -> str:
        return format_money(obj.total, obj.currency)

    @admin.display(description="shopper's page")
    def shopper_link(self, obj: Order) -> str:
        url = reverse("order-detail", args=[obj.pk])
        return format_html('<a id="shopper-link" href="{}">View as shopper</a>', url)

    @admin.display(description="payment attempts (the gateway's ledger)")
    def payment_attempts(self, obj: Order) -> str:
        rows = [
            (
                f"attempt-{a.charge_id}",
                (
                    a.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    a.charge_id,
                    format_money(a.amount, a.currency) if a.currency == obj.currency else f"{a.amount} {a.currency}",
                    a.get_outcome_display(),
                    a.decline_code or "—",
                ),
            )
            for a in order_payment_attempts(obj)
        ]
        columns = [("when", "when"), ("charge", "gateway charge"), ("amount", "amount"), ("outcome", "outcome")]
        columns.append(("decline-code", "decline code"))
        table = _table(columns, rows, "No payment attempt yet.")
        return format_html('<div id="payment-attempts">{}</div>', table)

    @admin.display(description="emails")
    def emails(self, obj: Order) -> str:
        rows = [
            (
                f"email-{m.pk}",
                (
                    format_html(
                        '<a href="{}">{}</a>',
                        reverse("admin:mailer_outboxmessage_change", args=[m.pk]),
                        _email_kind(m.key),
                    ),
                    m.get_status_display(),
                    m.attempts,
                    m.sent_at.strftime("%Y-%m-%d %H:%M:%S") if m.sent_at else "—",
                    m.message_id,
                ),
            )
            for m in order_emails(obj)
        ]
        columns = [("kind", "email"), ("status", "status"), ("attempts", "attempts"), ("sent", "sent")]
        columns.append(("message-id", "Message-ID"))
        table = _table(columns, rows, "No email yet.")
        return format_html('<div id="order-emails">{}</div>', table)

    def get_urls(self):
        """The admin's URLs of orders, and the staff actions of one order's page (POST only):
        ``<id>/note/`` and ``<id>/ship/``."""
        own = [
            path("<path:object_id>/note/", self.admin_site.admin_view(self.note_view), name="orders_order_note"),
            path("<path:object_id>/ship/", self.admin_site.admin_view(self.ship_view), name="orders_order_ship"),
            path("<path:object_id>/rerun/", self.admin_site.admin_view(self.rerun_view), name="orders_order_rerun"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The order's page, with its staff actions' forms (each a fresh one-time token) for staff
        who may operate."""
        context = dict(extra_context or {})
        if self.has_operate_permission(request):
            context.update(
                staff_actions=True,
                note_token=uuid.uuid4().hex,
                ship_token=uuid.uuid4().hex,
                payment_methods=PaymentMethod.choices,
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

    def _staff_action(self, request, object_id, act) -> HttpResponseRedirect:
        """Run ``act(order_id, actor, token)`` for a POST of staff who may operate; say what it did
        as a message and go back to the order's page. 405 for another method, 403 without the
        permission; a refusal or a form without its token is a message, nothing is done."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_operate_permission(request):
            raise PermissionDenied
        order = self.get_object(request, object_id)
        if order is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        try:
            said = act(order.pk, request.user.get_username(), request.POST.get("token", ""))
        except StaffActionRefused as refusal:
            self.message_user(request, refusal.message, messages.ERROR)
        except ValueError:
            self.message_user(request, "The form was incomplete: nothing was done. Try again.", messages.ERROR)
        else:
            self.message_user(request, said, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.pk]))

    def note_view(self, request, object_id):
        """POST ``text`` and ``token``: add an internal note (orders.operations.order_note_add)."""

        def act(order_id, actor, token):
            added = order_note_add(order_id=order_id, actor=actor, text=request.POST.get("text", ""), token=token)
            return "Note added." if added else "This note was added already."

        return self._staff_action(request, object_id, act)

    def rerun_view(self, request, object_id):
        """POST ``payment_method``: re-run a failed order's payment with that method (staff choose
        it: a declined card is never charged again silently; orders.operations.order_rerun)."""

        def act(order_id, actor, token):
            method = request.POST.get("payment_method", "")
            outcome = order_rerun(order_id=order_id, actor=actor, payment_method=method)
            return f"Order {Order.objects.get(pk=order_id).reference} {outcome}."

        return self._staff_action(request, object_id, act)

    def ship_view(self, request, object_id):
        """POST ``tracking`` and ``token``: mark the paid order shipped (orders.operations.order_ship)."""

        def act(order_id, actor, token):
            tracking = request.POST.get("tracking", "")
            shipped = order_ship(order_id=order_id, actor=actor, tracking=tracking, token=token)
            return "Marked shipped; the shopper is emailed." if shipped else "This order was marked shipped already."

        return self._staff_action(request, object_id, act)

    def has_operate_permission(self, request) -> bool:
        """Whether the user may run the order actions: Django's change permission on orders."""
        return request.user.has_perm("orders.change_order")

    @admin.action(description="Re-run processing (stuck or failed orders)", permissions=["operate"])
    def rerun_processing(self, request, queryset):
        for order in queryset.only("pk"):
            try:
                outcome = order_rerun(order_id=order.pk, actor=request.user.get_username())
            except ApplicationError as exc:  # a business rule refused it (e.g. no stock left to take again)
                self.message_user(request, f"Order {order.pk} was not re-run: {exc.message}", messages.ERROR)
                continue
            level = {"PAID": messages.INFO, "NEEDS_METHOD": messages.WARNING}.get(outcome.name, messages.SUCCESS)
            self.message_user(request, f"Order {order.pk} {outcome}.", level)

    @admin.action(description="Resend confirmation (paid or failed orders)", permissions=["operate"])
    def resend_confirmation(self, request, queryset):
        """Ask first (a page with a fresh token); the confirmed POST resends once per token."""
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/orders/order/resend_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Resend the confirmation?",
                    "opts": self.model._meta,
                    "orders": queryset,
                    "token": uuid.uuid4().hex,
                    "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                },
            )
        token = request.POST.get("token", "")
        for order in queryset.only("pk"):
            try:
                message, created = order_confirmation_resend(
                    order_id=order.pk, actor=request.user.get_username(), token=token
                )
            except ConfirmationNotSent:
                self.message_user(
                    request,
                    f"Order {order.pk} is pending: its confirmation goes out once it is processed.",
                    messages.WARNING,
                )
                continue
            except ValueError:
                self.message_user(request, "The form was incomplete: nothing was sent. Try again.", messages.ERROR)
                return None
            if created:
                self.message_user(
                    request, f"Order {order.pk}: confirmation queued again as {message.message_id}.", messages.SUCCESS
                )
            else:
                self.message_user(
                    request, f"Order {order.pk}: this resend was queued already ({message.message_id}).", messages.INFO
                )
        return None


@admin.register(SandboxCharge)
class SandboxChargeAdmin(ReadOnlyAuditMixin, BoundedChangeListMixin, admin.ModelAdmin):
    list_display = ["charge_id", "idempotency_key", "amount_display", "currency", "outcome", "created_at"]
    list_filter = ["outcome"]
    search_fields = ["charge_id", "idempotency_key"]
    fields = [
        "charge_id",
        "idempotency_key",
        "amount_display",
        "currency",
        "payment_method",
        "outcome",
        "decline_code",
        "created_at",
    ]

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: SandboxCharge) -> str:
        return format_money(obj.amount, obj.currency)
