"""Admin for the catalogue and orders (staff only, Django admin's own permission checks).

Every amount is shown formatted in its currency and prices are typed in major units ("9.50" EUR,
"500" JPY); ``orders.money`` converts to and from the minor units that are stored.
"""

from django import forms
from django.contrib import admin
from django.db import connection

from orders.models import Charge, Order, OrderLine, OrderStatusChange, Product, SandboxCharge
from orders.money import InvalidAmount, format_money, to_major, to_minor
from project.admin import BoundedChangeListMixin


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
        fields = ["sku", "name", "description", "price", "currency", "stock", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["price"] = to_major(self.instance.price, self.instance.currency)

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


@admin.register(Product)
class ProductAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["sku", "name", "price_display", "stock", "is_active"]
    list_filter = ["is_active", "currency"]
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


class ChargeInline(admin.StackedInline):
    model = Charge
    extra = 0
    can_delete = False
    fields = readonly_fields = ["gateway_charge_id", "amount_display", "currency", "created_at"]

    @admin.display(description="amount")
    def amount_display(self, obj: Charge) -> str:
        return format_money(obj.amount, obj.currency)


class OrderStatusChangeInline(admin.TabularInline):
    model = OrderStatusChange
    extra = 0
    can_delete = False
    readonly_fields = ["from_status", "to_status", "reason", "created_at"]


@admin.register(Order)
class OrderAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    """Orders are read-only here: status changes go through orders.services, never a form."""

    list_display = ["id", "email", "status", "total_display", "created_at"]
    list_filter = ["status", "currency", "created_at"]
    search_fields = ["id", "email"]
    # No change permission: Django shows every field read-only, so no readonly_fields.
    fields = [
        "id",
        "idempotency_key",
        "email",
        "status",
        "currency",
        "total_display",
        "payment_method",
        "failure_reason",
        "created_at",
        "updated_at",
    ]
    inlines = [OrderLineInline, ChargeInline, OrderStatusChangeInline]

    @admin.display(description="total", ordering="total")
    def total_display(self, obj: Order) -> str:
        return format_money(obj.total, obj.currency)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SandboxCharge)
class SandboxChargeAdmin(BoundedChangeListMixin, admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
