"""What the shop's admin shares: bounded changelists, read-only audit rows, the client's address."""

from itertools import islice

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.db import DataError
from django.utils.text import smart_split

# Words in a changelist search. Django's admin adds one OR-group of conditions per word over
# every search field (ModelAdmin.get_search_results): the query grows with the word count.
MAX_SEARCH_TERMS = 8


class BoundedChangeListMixin:
    """A changelist whose work is bounded by the shop whatever its URL asks (put before ModelAdmin).

    - ``list_per_page`` rows a page; "Show all" (``?all=``) only while the result has at most
      ``list_max_show_all`` rows, otherwise pages (Django's ChangeList).
    - A search of more than MAX_SEARCH_TERMS words is refused with a message and runs no
      query. Words are counted as the admin splits them (``django.utils.text.smart_split``:
      a quoted phrase is one word), stopping after the limit, so a long search costs no more.
    - A filter value out of the range of its column or of Python's dates (``?created_at__year=
      99999999999``, an id of 30 digits) is what Django's admin calls an incorrect lookup: it
      redirects to the list with ``?e=1`` instead of a 500. Django turns errors it meets while
      building the queryset into IncorrectLookupParameters (``ChangeList.get_queryset``), but
      these surface only when the first query runs (the paginator's count, in ``ChangeList``'s
      constructor).
    - An action's selection that is not ids of this model (``_selected_action=not-a-uuid``, a NUL
      byte) is refused with a message and the list shown again, instead of a 500: Django filters
      ``pk__in`` the selection only when the action runs (``ModelAdmin.response_action``).
    """

    list_per_page = 50
    list_max_show_all = 200

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except (OverflowError, ValueError, DataError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def response_action(self, request, queryset):
        try:
            return super().response_action(request, queryset)
        except (ValidationError, ValueError, DataError):
            messages.warning(request, "Select rows from the list, then pick an action.")
            return None  # Django's changelist redirects to itself when an action returns nothing

    def get_search_results(self, request, queryset, search_term):
        if len(list(islice(smart_split(search_term), MAX_SEARCH_TERMS + 1))) > MAX_SEARCH_TERMS:
            messages.warning(request, f"Search with at most {MAX_SEARCH_TERMS} words.")
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)


class ReadOnlyAuditMixin:
    """Rows of a record (an audit trail, orders, the outbox; a ModelAdmin or an inline; put it first):
    nobody adds, changes or deletes them in a form; actions that call services may still act on them.

    Not even a superuser: these return False whatever the user's permissions, so Django's admin
    offers no form, no save button, no delete link and no "delete selected" action. Viewing
    needs the model's view permission as usual.
    """

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def client_ip_address(request) -> str | None:
    """Return the address of the client that sent ``request`` (django-axes' AXES_CLIENT_IP_CALLABLE).

    Behind the shop's TLS proxy (settings.CLIENT_IP_FROM_X_FORWARDED_FOR, set with BEHIND_TLS_PROXY)
    it is the last address of ``X-Forwarded-For``, the one the proxy in front of the web process
    appended; the addresses before it are whatever the client sent, so they are never trusted
    (a client that sets the header itself would otherwise choose the address it is locked out by).
    Otherwise it is the peer's address (``REMOTE_ADDR``) and the header is ignored. None when
    neither is known.
    """
    if settings.CLIENT_IP_FROM_X_FORWARDED_FOR:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR") or None


def lockout_response(request, original_response=None, credentials=None):
    """django-axes' AXES_LOCKOUT_CALLABLE: the admin's lockout page (admin/lockout.html), status 429.

    Args are axes' (the request, the response it replaces, the login's credentials). Returns an
    HttpResponse whose ``Retry-After`` is the cool-off in seconds (axes' own page has neither words
    a person can act on nor the header). Raises nothing of its own.
    """
    from django.contrib import admin
    from django.shortcuts import render

    seconds = round(settings.AXES_COOLOFF_TIME * 3600)
    context = {
        **admin.site.each_context(request),
        "title": "Too many login attempts",
        "cooloff_minutes": round(seconds / 60),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
    }
    response = render(request, "admin/lockout.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response
