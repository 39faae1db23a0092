"""URL configuration: the shop, health probes and the admin (django-rq's dashboard is inside it)."""

from django.contrib import admin
from django.urls import include, path

from project import health

# The admin's name in its header and in the browser's title bar.
admin.site.site_header = admin.site.site_title = "Formation admin"
admin.site.index_title = "Run the shop"

urlpatterns = [
    path("health", health.liveness, name="health"),
    path("ready", health.readiness, name="ready"),
    path("admin/", admin.site.urls),
    path("", include("orders.urls")),
]
