"""URL configuration: the shop, health probes and the admin."""

from django.contrib import admin
from django.urls import include, path

from project import health

urlpatterns = [
    path("health", health.liveness, name="health"),
    path("ready", health.readiness, name="ready"),
    path("admin/", admin.site.urls),
    path("", include("orders.urls")),
]
