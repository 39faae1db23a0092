"""Django's PostgreSQL backend with a health check that costs no round trip (settings.DATABASES ENGINE)."""

# The ENGINE that names this backend in settings.DATABASES (project.env sets it on every database).
ENGINE = __name__
