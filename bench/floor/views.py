"""The floor's two views and its URLconf (ROOT_URLCONF): the least a Django view on this stack
can do per request, so each shop figure has a same-run floor (BENCHMARKS.md).

``GET /ready`` (also ``/select``): one primary-key SELECT, 200 with the row's text. ``POST
/insert``: one INSERT in a transaction, 201. The table ``bench_floor`` is created by
bench/run.py (ensure_floor_table) before the floor starts; nothing here creates schema.
"""

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def select_one(request: HttpRequest) -> HttpResponse:
    """200 with the text of ``bench_floor`` row 1, read by its primary key."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT note FROM bench_floor WHERE id = %s", [1])
        row = cursor.fetchone()
    return HttpResponse(row[0] if row else "", content_type="text/plain")


@csrf_exempt
def insert_one(request: HttpRequest) -> HttpResponse:
    """201 after inserting one ``bench_floor`` row inside a transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_floor (note) VALUES (%s)", ["order"])
    return HttpResponse("created", status=201, content_type="text/plain")


urlpatterns = [
    path("ready", select_one),
    path("select", select_one),
    path("insert", insert_one),
]
