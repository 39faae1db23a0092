"""URL configuration: the shop, health probes, metrics and the admin (django-rq's dashboard is inside it)."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path

from core import health, metrics

# PostgreSQL unreachable outside a view (the session save after it) is a 503, not a 500.
handler500 = "core.middleware.server_error"


def favicon(request: HttpRequest) -> HttpResponse:
    """Redirect (302) ``/favicon.ico``, which browsers and crawlers ask for unprompted, to the
    favicon's current hashed static URL; temporary, since that URL changes with its content."""
    return redirect(static("favicon.svg"))


urlpatterns = [
    path("health", health.liveness, name="health"),
    path("favicon.ico", favicon, name="favicon"),
    path("ready", health.readiness, name="ready"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("orders.urls")),
]
