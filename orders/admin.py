"""Admin for the catalogue and orders (staff only, Django admin's own permission checks)."""

from django.contrib import admin

from orders.models import Charge, Order, OrderLine, OrderStatusChange, Product, SandboxCharge
from orders.templatetags.money import money
from project.admin import BoundedChangeListMixin


@admin.register(Product)
class ProductAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    list_display = ["sku", "name", "price_display", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["sku", "name"]

    @admin.display(description="price", ordering="price")
    def price_display(self, obj: Product) -> str:
        return money(obj.price, obj.currency)


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    readonly_fields = ["product", "quantity", "unit_price"]


class ChargeInline(admin.StackedInline):
    model = Charge
    extra = 0
    can_delete = False
    readonly_fields = ["gateway_charge_id", "amount", "currency", "created_at"]


class OrderStatusChangeInline(admin.TabularInline):
    model = OrderStatusChange
    extra = 0
    can_delete = False
    readonly_fields = ["from_status", "to_status", "reason", "created_at"]


@admin.register(Order)
class OrderAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    """Orders are read-only here: status changes go through orders.services, never a form."""

    list_display = ["id", "email", "status", "total_display", "created_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["id", "email"]
    readonly_fields = [
        "id",
        "idempotency_key",
        "email",
        "status",
        "currency",
        "total",
        "payment_method",
        "failure_reason",
        "created_at",
        "updated_at",
    ]
    inlines = [OrderLineInline, ChargeInline, OrderStatusChangeInline]

    @admin.display(description="total", ordering="total")
    def total_display(self, obj: Order) -> str:
        return money(obj.total, obj.currency)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SandboxCharge)
class SandboxChargeAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    list_display = ["charge_id", "idempotency_key", "amount", "currency", "outcome", "created_at"]
    list_filter = ["outcome"]
    search_fields = ["charge_id", "idempotency_key"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
