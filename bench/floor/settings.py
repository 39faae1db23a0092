"""The floor's settings: a bare Django project (no apps, no middleware, no templates) on the
shop's PostgreSQL with the same persistent connection (CONN_MAX_AGE), for `make bench` only.

DATABASE_URL is read as the shop reads it (project.env.env_database), so the floor and the shop
talk to the same server in the same way.
"""

from project.env import env_database

SECRET_KEY = "bench-floor-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.floor.views"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
USE_TZ = True
DATABASES = {
    "default": env_database(
        "DATABASE_URL", conn_max_age=60, conn_health_checks=True, connect_timeout=5, statement_timeout=30
    )
}
