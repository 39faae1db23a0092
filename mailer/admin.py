"""Admin for the email outbox (staff only); rows are read-only, sending is the mailer's job."""

from django.contrib import admin

from mailer.models import OutboxMessage
from project.admin import BoundedChangeListMixin


@admin.register(OutboxMessage)
class OutboxMessageAdmin(BoundedChangeListMixin, admin.ModelAdmin):
    list_display = ["id", "key", "to_email", "status", "attempts", "due_at", "sent_at"]
    list_filter = ["status"]
    search_fields = ["key", "to_email", "message_uuid"]
    readonly_fields = [
        "key",
        "message_uuid",
        "to_email",
        "subject",
        "body",
        "status",
        "attempts",
        "due_at",
        "lease_token",
        "lease_expires_at",
        "sent_at",
        "last_error",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
