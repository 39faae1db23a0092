"""Admin for the email outbox (staff only); rows are read-only, sending is the mailer's job.

One action, "Retry email", puts failed messages back in the queue (mailer.services.outbox_message_retry);
it needs the change permission on outbox messages and is recorded in the admin's history of the row.
"""

from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.text import Truncator

from core.admin import BoundedChangeListMixin, ReadOnlyAuditMixin
from mailer.models import OutboxMessage
from mailer.services import outbox_message_retry

# Characters of a key or an error shown in the list (the list fits a 1280 px window next to the
# admin's sidebar); the whole text is in the cell's tooltip and on the message's page.
KEY_CHARS = 24
ERROR_CHARS = 40


def _shortened(text: str, chars: int) -> str:
    """Return ``text`` cut to ``chars`` characters with the whole of it as the tooltip."""
    if not text:
        return "—"
    return format_html('<span class="shortened" title="{}">{}</span>', text, Truncator(text).chars(chars))


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAuditMixin, BoundedChangeListMixin, admin.ModelAdmin):
    # Read-only, never deleted: the record of what was mailed (Message-ID, attempts), from which
    # the shopper's order page reads "confirmation sent". Staff change a row only by its action.
    # Few, short columns: the list reads at 1280 px (keys and errors are cut, with a tooltip; the
    # id, times and Message-ID are on the message's page).
    list_display = ["key_display", "to_email", "status", "attempts", "error_display"]
    list_display_links = ["key_display"]
    list_filter = ["status", "gave_up"]
    search_fields = ["key", "to_email", "message_uuid"]
    readonly_fields = [
        "key",
        "message_uuid",
        "to_email",
        "subject",
        "body",
        "status",
        "attempts",
        "unsettled_attempts",
        "gave_up",
        "due_at",
        "lease_token",
        "lease_expires_at",
        "sent_at",
        "last_error",
        "requeued_at",
        "created_at",
    ]
    actions = ["retry_email"]

    @admin.display(description="key", ordering="key")
    def key_display(self, obj: OutboxMessage) -> str:
        # Cut in the middle: a key's end tells a resend from its original ("…:resend:<token>").
        key = obj.key
        if len(key) <= KEY_CHARS:
            return key
        head = KEY_CHARS // 2
        shown = key[:head] + "…" + key[-(KEY_CHARS - head - 1) :]
        return format_html('<span class="shortened" title="{}">{}</span>', key, shown)

    @admin.display(description="last error")
    def error_display(self, obj: OutboxMessage) -> str:
        return _shortened(obj.last_error, ERROR_CHARS)

    def has_operate_permission(self, request) -> bool:
        """Whether the user may retry messages: Django's change permission on outbox messages."""
        return request.user.has_perm("mailer.change_outboxmessage")

    @admin.action(description="Retry email (failed messages)", permissions=["operate"])
    def retry_email(self, request, queryset):
        retried = left = 0
        for message in queryset.only("pk"):
            if outbox_message_retry(message_id=message.pk):
                self.log_change(request, message, "Retried: queued again, due now.")
                retried += 1
            else:
                left += 1
        if retried:
            self.message_user(
                request, f"{retried} message(s) queued again; the mailer sends them now.", messages.SUCCESS
            )
        if left:
            self.message_user(
                request, f"{left} message(s) left alone: only failed messages are retried.", messages.WARNING
            )
