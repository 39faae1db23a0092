"""What every ModelAdmin of the shop shares: work bounded by the shop, not by the URL."""

from itertools import islice

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
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
    """

    list_per_page = 50
    list_max_show_all = 200

    def get_changelist_instance(self, request):
        try:
            return super().get_changelist_instance(request)
        except (OverflowError, ValueError, DataError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def get_search_results(self, request, queryset, search_term):
        if len(list(islice(smart_split(search_term), MAX_SEARCH_TERMS + 1))) > MAX_SEARCH_TERMS:
            messages.warning(request, f"Search with at most {MAX_SEARCH_TERMS} words.")
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)
