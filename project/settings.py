"""The one settings module of Formation; every value comes from the environment.

Variables, their meaning and defaults are listed in docs/configuration.md.
A missing or malformed variable raises ImproperlyConfigured naming it; ``manage.py`` and the
gunicorn config turn that into one line on stderr and a non-zero exit.
"""

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from core.logs import log_format, logging_config, program_name
from core.queues import DEFAULT_QUEUE, MAINTENANCE_QUEUE
from processes.budget import DEFAULT_HEADROOM
from project.env import (
    env_bool,
    env_database,
    env_email,
    env_formation,
    env_int,
    env_list,
    env_number,
    env_redis_url,
    env_str,
    redis_keepalive_options,
    release_version,
    web_server_settings,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# The release this process runs (RELEASE_VERSION, a platform's build variable, or the checkout's
# commit) and its process type (PROCESS_TYPE, which the entry points set from the Procfile; a
# process started otherwise, such as pytest, is named after its program). Both name every log
# line, every PostgreSQL connection and the metrics (docs/releases.md#which-release-runs).
RELEASE = release_version()
PROCESS_TYPE = env_str("PROCESS_TYPE") or program_name()

# Security. Required secrets have no default (cookiecutter-django); DEBUG is off unless set.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", required=not DEBUG)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is empty: list the host names the shop answers to, comma-separated")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
# Database sessions whose cart changes under the row lock: overlapping requests lose none.
SESSION_ENGINE = "orders.sessions"
X_FRAME_OPTIONS = "DENY"
# HTTPS behind a TLS-terminating proxy (https://docs.djangoproject.com/en/5.2/ref/settings/#secure-ssl-redirect).
# Probes come over plain HTTP from inside the cluster: never redirect them.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Sent by SecurityMiddleware with X-Content-Type-Options: nosniff (SECURE_CONTENT_TYPE_NOSNIFF, on by
# default): other sites see our origin, never an order page's unguessable path.
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp 4, https://django-csp.readthedocs.io/en/latest/configuration.html):
# scripts and styles only from our own static files, no 'unsafe-inline'. The admin of Django 5.2
# runs under it unchanged (its scripts are files; tests/browser/test_security.py proves it).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    },
}

INSTALLED_APPS = [
    # The process runtime first: its rqworker and rqscheduler commands must win over django_rq's
    # (the first app with a command of a name wins, Django's get_commands()).
    "processes",
    "orders",
    "mailer",
    "orders.apps.ShopAdminConfig",  # django.contrib.admin with the shop's site (orders/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "csp",
    "axes",  # admin login lockout (see "Admin logins" below)
]

MIDDLEWARE = [
    # Outermost: counts and times every answer by view and status (core/metrics.py).
    "core.middleware.RequestMetricsMiddleware",
    # Next: a HEAD gets GET's headers and no body (gunicorn would log a warning for each).
    "core.middleware.HeadWithoutBodyMiddleware",
    # Next: /health, /ready and /metrics answer whatever the Host header (probes send the pod IP); see its docstring.
    "core.middleware.ProbeMiddleware",
    # Next: every other answer carries X-Request-ID, and every line logged for it the request id.
    "core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Right after SecurityMiddleware, so that every answer below it carries the policy too: static
    # files (WhiteNoise), CommonMiddleware's slash redirects and the 400 for a foreign Host header.
    "csp.middleware.CSPMiddleware",
    # Here too, not below the sessions: answers made outside the view (the 503 for PostgreSQL lost
    # during the session save, handler500's pages) carry X-Frame-Options like the rest.
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.RejectNonUtf8FormsMiddleware",
    "core.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "core.middleware.MethodNotAllowedPageMiddleware",
    # Last, as django-axes requires (https://django-axes.readthedocs.io/en/latest/2_installation.html).
    "axes.middleware.AxesMiddleware",
]

# Admin logins: django-axes records every failed login (its tables, its admin pages) and locks out
# a username from one address after AXES_FAILURE_LIMIT failures for AXES_COOLOFF_TIME hours;
# staff clear a lockout in the admin ("Axes" > access attempts) or with `manage.py axes_reset`
# (https://django-axes.readthedocs.io/en/latest/4_configuration.html). Per username *and* address,
# so a stranger guessing cannot lock staff out from their own desks.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before the password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_number("AXES_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours, as axes reads a number
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A page in plain words with Retry-After (templates/admin/lockout.html) instead of axes' bare text.
AXES_LOCKOUT_CALLABLE = "core.admin.lockout_response"
AXES_VERBOSE = False  # no start-up banner in every process's output; lockouts are still logged
# The client's address: behind the TLS proxy the one it appended to X-Forwarded-For, else the peer.
CLIENT_IP_FROM_X_FORWARDED_FOR = SECURE_PROXY_SSL_HEADER is not None
AXES_CLIENT_IP_CALLABLE = "core.admin.client_ip_address"
# django-rq's dashboard as an entry of the admin index (/admin/django_rq/dashboard/), staff only.
RQ_SHOW_ADMIN_LINK = True

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orders.context_processors.cart",
            ],
        },
    },
]

# Database: PostgreSQL only (dev/prod parity). Connections are reused for CONN_MAX_AGE
# seconds and health-checked before reuse, so a restarted server never fails a request
# on a dead pooled connection (https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections).
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1, maximum=60)
# Seconds any statement of the app may run, lock waits included, before PostgreSQL cancels it
# (statement_timeout, https://www.postgresql.org/docs/current/runtime-config-client.html): a request
# stuck behind a lock answers 503 (core/middleware.py) before gunicorn kills its worker at
# WEB_TIMEOUT (checked below). Set at connect through libpq's `options`, so every connection has
# it, or, behind a pooler, by the role's setting that the release phase writes; the release lifts
# it for its own session (processes/release.py).
DATABASE_STATEMENT_TIMEOUT = env_number("DATABASE_STATEMENT_TIMEOUT", 10, minimum=0.1, maximum=3600)
# DATABASE_URL is what every process type connects through: a transaction pooler (PgBouncer) where
# there is one. DATABASE_DIRECT_URL is PostgreSQL itself, for what needs a session of its own (the
# release's advisory lock and session settings); it defaults to DATABASE_URL. A direct URL that
# differs says a pooler is in between, unless DATABASE_POOLED says otherwise (docs/connections.md).
# Seconds after which a connection that went silent without being closed (an expired NAT entry, a
# vanished host) ends in an error instead of hanging a request or the mailer: libpq's TCP
# keepalives and tcp_user_timeout on every entry below (project.env.keepalive_options).
DATABASE_SILENCE_TIMEOUT = env_number("DATABASE_SILENCE_TIMEOUT", 15, minimum=4, maximum=600)
_direct_url = env_str("DATABASE_DIRECT_URL")
_direct_differs = bool(_direct_url) and _direct_url != env_str("DATABASE_URL")
DATABASE_POOLED = env_bool("DATABASE_POOLED", _direct_differs)
_connection = {
    "conn_max_age": env_int("CONN_MAX_AGE", 60, minimum=0),
    "conn_health_checks": env_bool("CONN_HEALTH_CHECKS", True),
    "connect_timeout": DATABASE_CONNECT_TIMEOUT,
    "statement_timeout": DATABASE_STATEMENT_TIMEOUT,
    "silence_timeout": DATABASE_SILENCE_TIMEOUT,
    # "formation/<instance>/<release>": the instance is the platform's name of this process (DYNO:
    # web.1 on Heroku and under `make run`) or its process type. The database backend adds
    # "/<pid>@<host>" at each connect (core/postgresql/base.py), within PostgreSQL's 63 bytes; the
    # post-deploy step reads the type and release (processes.stages).
    "application_name": f"formation/{env_str('DYNO') or PROCESS_TYPE}/{RELEASE}"[:63],
}
_database = env_database("DATABASE_URL", pooled=DATABASE_POOLED, **_connection)
if SECRET_KEY is None:
    # DEBUG without a SECRET_KEY: derive one that every process of this configuration shares
    # (sessions survive across web workers) and that is not written anywhere in the code.
    SECRET_KEY = hashlib.sha256(f"formation-debug-secret:{env_str('DATABASE_URL')}".encode()).hexdigest()
DATABASES = {"default": _database}
if _direct_differs:
    # PostgreSQL without the pooler, for session state: the migrate command runs here.
    DATABASES["direct"] = env_database("DATABASE_DIRECT_URL", **_connection)
    DATABASES["direct"]["TEST"] = {"MIRROR": "default"}
# The sandbox payment gateway writes its charges through its own connection, so they commit on
# their own like a real provider's, whatever happens to the order's transaction. It stands for a
# provider outside the shop's database, and a job asks it while its order transaction holds a
# connection: from the same transaction pool, jobs as many as the pool's server connections would
# each wait for a second one that never comes. So behind a pooler it uses a pool of its own
# (DATABASE_GATEWAY_URL, a second database entry of the pooler) or else PostgreSQL directly
# (docs/connections.md#the-sandbox-gateway).
DATABASE_GATEWAY_POOLED = bool(env_str("DATABASE_GATEWAY_URL"))
if DATABASE_GATEWAY_POOLED:
    DATABASES["gateway"] = env_database("DATABASE_GATEWAY_URL", pooled=DATABASE_POOLED, **_connection)
    DATABASES["gateway"]["TEST"] = {"MIRROR": "default"}
elif "direct" in DATABASES:
    DATABASES["gateway"] = {**DATABASES["direct"], "OPTIONS": dict(DATABASES["direct"]["OPTIONS"])}
else:
    DATABASES["gateway"] = {**_database, "OPTIONS": dict(_database["OPTIONS"])}
# The connection budget that `manage.py check --deploy` holds against PostgreSQL's max_connections
# (processes.checks, docs/connections.md#the-check): the formation at its largest (FORMATION,
# "web=3,worker=12"; a type not named counts once), the server connections a pooler may open in all
# (DATABASE_POOL_SIZE: PgBouncer's default_pool_size x its replicas; 0 when not known), and the
# connections kept free for the operator, the release phase and scalers.
FORMATION = env_formation("FORMATION")
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 0, minimum=0)
DATABASE_CONNECTION_HEADROOM = env_int("DATABASE_CONNECTION_HEADROOM", DEFAULT_HEADROOM, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis and the queues (django-rq).
REDIS_CONNECT_TIMEOUT = env_number("REDIS_CONNECT_TIMEOUT", 2, minimum=0.1, maximum=60)
# REDIS_PASSWORD: the password of a REDIS_URL that has none (Kubernetes' Secret, which KEDA reads too).
# Seconds after which a Redis connection that went silent without being closed ends in an error
# (TCP keepalives, project.env.redis_keepalive_options): every redis.Redis of every process type
# gets REDIS_SOCKET_OPTIONS (core.queues.keep_alive).
REDIS_SILENCE_TIMEOUT = env_number("REDIS_SILENCE_TIMEOUT", 15, minimum=4, maximum=600)
REDIS_SOCKET_OPTIONS = redis_keepalive_options(REDIS_SILENCE_TIMEOUT)
REDIS_URL = env_redis_url("REDIS_URL", connect_timeout=REDIS_CONNECT_TIMEOUT, password_name="REDIS_PASSWORD")

RQ_JOB_TIMEOUT = env_int("RQ_JOB_TIMEOUT", 60, minimum=1)
RQ_QUEUES = {
    DEFAULT_QUEUE: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_JOB_TIMEOUT},
    MAINTENANCE_QUEUE: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_JOB_TIMEOUT},
}
# Enqueue only after the surrounding transaction commits (django_rq/queues.py), set
# explicitly rather than left to django-rq's default.
RQ = {
    "COMMIT_MODE": "on_db_commit",
    "WORKER_CLASS": "processes.worker.Worker",
    "SCHEDULER_CLASS": "processes.scheduler.Scheduler",
}

# Periodic jobs, registered under these fixed ids each time the scheduler starts, so a
# restart replaces a job instead of adding a second copy. Intervals in seconds. They run on
# the maintenance queue (core.queues), ahead of the orders.
# The sweep is what recovers an order whose whole worker was killed mid-job (its work horse's death
# alone is retried by the worker itself, orders.queueing.ORDER_JOB_RETRIES): a started job is dead
# once its heartbeat (every 2 s, processes.worker.JOB_HEARTBEAT_SECONDS) is ORDER_STUCK_AFTER old, and
# the sweep runs every ORDER_SWEEP_INTERVAL (the scheduler ticks every second, Procfile). Defaults:
# an order is paid again within about 6 + 2 + 1 s + the job itself after kill -9, inside the 15 s a
# killed worker may cost an order (tests/process/test_crash.py, PAID_WITHIN; BENCHMARKS.md).
# A pass costs a few Redis round trips (orders_sweep_pending), so a short interval is cheap.
ORDER_SWEEP_INTERVAL = env_int("ORDER_SWEEP_INTERVAL", 2, minimum=1)
ORDER_STUCK_AFTER = env_int("ORDER_STUCK_AFTER", 6, minimum=0)
PERIODIC_JOBS = [
    {"id": "orders-sweep-pending", "func": "orders.jobs.sweep_pending_orders", "interval": ORDER_SWEEP_INTERVAL},
    {"id": "mailer-release-leases", "func": "mailer.jobs.release_expired_leases", "interval": ORDER_SWEEP_INTERVAL},
    # Checkouts live in database sessions, which Django never deletes by itself (seconds).
    {"id": "sessions-clear-expired", "func": "orders.jobs.clear_expired_sessions", "interval": 3600},
    {"id": "mailer-delete-sent", "func": "mailer.jobs.delete_sent", "interval": 24 * 3600},
]
# Rows deleted per statement by the periodic clean-ups (expired sessions, sent outbox rows): each
# batch is its own short statement, well inside DATABASE_STATEMENT_TIMEOUT whatever the backlog.
CLEANUP_BATCH_SIZE = env_int("CLEANUP_BATCH_SIZE", 10_000, minimum=1, maximum=1_000_000)

# Email: SMTP only (dev/prod parity); EMAIL_URL is smtp://[user:password@]host:port with
# ?tls=True or ?ssl=True (https://github.com/migonzalvar/dj-email-url).
_email = env_email("EMAIL_URL", "smtp://localhost:25")
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = _email["EMAIL_HOST"]
EMAIL_PORT = _email["EMAIL_PORT"]
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = _email["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
EMAIL_TIMEOUT = _email["EMAIL_TIMEOUT"] or env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Formation shop <shop@formation.localhost>")
MAILER_LEASE_SECONDS = env_int("MAILER_LEASE_SECONDS", 60, minimum=5)
# A shorter lease would leave too little time before the send deadline for a whole SMTP exchange
# (docs/order-flow.md#the-send-deadline).
if MAILER_LEASE_SECONDS < 6 * EMAIL_TIMEOUT:
    raise ImproperlyConfigured(
        f"MAILER_LEASE_SECONDS={MAILER_LEASE_SECONDS} is too short: it must be at least 6 x EMAIL_TIMEOUT "
        f"({6 * EMAIL_TIMEOUT} s), or a slow SMTP server could get a message twice"
    )
MAILER_POLL_INTERVAL = env_number("MAILER_POLL_INTERVAL", 1.0, minimum=0.05, maximum=3600)
# Attempts in a row with no known outcome (an unexpected error, a mailer that died mid-send)
# before a message fails; transient SMTP errors never count (mailer.services).
# Days a sent outbox row is kept (for staff and the idempotency key) before the daily clean-up deletes it.
MAILER_SENT_RETENTION_DAYS = env_int("MAILER_SENT_RETENTION_DAYS", 30, minimum=1, maximum=36500)
MAILER_MAX_ATTEMPTS = env_int("MAILER_MAX_ATTEMPTS", 10, minimum=1)
# Seconds after which a message the SMTP server keeps refusing transiently (or that cannot reach
# it) fails: RFC 5321 section 4.5.4.1, "the give-up time generally needs to be at least 4-5 days".
MAILER_GIVE_UP_AFTER = env_int("MAILER_GIVE_UP_AFTER", 5 * 24 * 3600, minimum=60)

# Payments: the sandbox gateway's artificial latency, for crash tests and demos.
PAYMENT_SANDBOX_LATENCY_MS = env_int("PAYMENT_SANDBOX_LATENCY_MS", 0, minimum=0, maximum=600_000)
# Seconds the payment call may take before the job gives up on it (orders.payments.PaymentTimeout).
# At most half the RQ job limit: the other half is left for the order's transaction and the
# commit, so a slow provider ends the call, not the job (RQ kills a job past its timeout with no
# chance to record a charge that went through).
PAYMENT_TIMEOUT = env_number("PAYMENT_TIMEOUT", RQ_JOB_TIMEOUT / 2, minimum=0.1, maximum=3600)
if PAYMENT_TIMEOUT > RQ_JOB_TIMEOUT / 2:
    raise ImproperlyConfigured(
        f"PAYMENT_TIMEOUT={PAYMENT_TIMEOUT:g} is too long: it must be at most half of RQ_JOB_TIMEOUT "
        f"({RQ_JOB_TIMEOUT / 2:g} s), or a slow provider would outlast the job and its charge be lost"
    )
# Seconds before the sweep asks the provider again about an order whose call ended with no answer:
# base × 2^(n-1) after the n-th such call, capped (orders.services.order_payment_retry_later), so a
# slow provider sees growing gaps per order, not a call at every sweep.
PAYMENT_RETRY_BASE = env_number("PAYMENT_RETRY_BASE", 10, minimum=0.1, maximum=3600)
PAYMENT_RETRY_CAP = env_number("PAYMENT_RETRY_CAP", 300, minimum=0.1, maximum=86400)
# Seconds after which a pending order whose payment call had no answer is surfaced as unsettled:
# a warning line at each retry, the formation_orders_payment_unsettled gauge and the admin's
# "Payment" filter. Staff look at the provider's dashboard for the charge.
PAYMENT_UNSETTLED_AFTER = env_int("PAYMENT_UNSETTLED_AFTER", 600, minimum=1)

# Static files, served by WhiteNoise (https://whitenoise.readthedocs.io/en/stable/django.html).
# With DEBUG off they are served from STATIC_ROOT under content-hashed names (cached for ten years),
# which `manage.py collectstatic` writes: the image's build step runs it, and so does
# `python -m embedded` (make run, make test, make manage) into .formation/<profile>/static.
# web refuses to start without the manifest (gunicorn.conf.py) rather than answer 500.
# With DEBUG on they come straight from the app and static/ folders, unhashed.
STATIC_URL = "static/"
STATIC_ROOT = env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Logs are an event stream on stdout (factor 11).
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not a level: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
# JSON lines (the default) or today's text lines (LOG_FORMAT=text), each with the request, job and
# order ids where there is one (core/logs.py, core/context.py).
LOG_FORMAT = log_format()
# RQ's lines about each run of a periodic job are DEBUG: idle, the log stays quiet (core.logs.QuietJobs).
LOGGING = logging_config(
    level=LOG_LEVEL,
    fmt=LOG_FORMAT,
    process_type=PROCESS_TYPE,
    release=RELEASE,
    quiet_job_ids=[job["id"] for job in PERIODIC_JOBS],
)

# The shop's public address, for links in emails (no trailing slash). `make run` sets it to the
# address it serves on: honcho gives each process type its own PORT, and the worker writes the emails.
SITE_URL = env_str("SITE_URL", f"http://127.0.0.1:{env_str('PORT', '8000')}").rstrip("/")
if urlsplit(SITE_URL).scheme not in {"http", "https"} or not urlsplit(SITE_URL).hostname:
    raise ImproperlyConfigured(
        f"SITE_URL={SITE_URL!r} is not an http:// or https:// address, e.g. https://shop.example.com"
    )
# Seconds the order page keeps updating itself (polling, or its no-script refresh) after the order
# was placed; then it says that processing takes longer than usual and stops.
ORDER_PAGE_WAIT_SECONDS = env_int("ORDER_PAGE_WAIT_SECONDS", 120, minimum=1)

# Domain part of the fixed Message-ID of each outbox message.
MESSAGE_ID_DOMAIN = env_str("MESSAGE_ID_DOMAIN", "formation.localhost")

# The web process type's PORT, WEB_CONCURRENCY and timeouts: gunicorn reads them; validated here
# too so that the release phase and `manage.py check` stop a bad value before web starts.
WEB_SERVER = web_server_settings()
if WEB_SERVER["timeout"] <= DATABASE_STATEMENT_TIMEOUT:
    raise ImproperlyConfigured(
        f"DATABASE_STATEMENT_TIMEOUT={DATABASE_STATEMENT_TIMEOUT:g} is too long: it must be below WEB_TIMEOUT "
        f"({WEB_SERVER['timeout']} s), so a slow statement answers 503 instead of gunicorn killing the worker"
    )

# The release phase (processes/release.py): seconds a migration waits for a table lock per attempt
# (shop queries queued behind it wait as long), retries after that (a pause from
# MIGRATION_RETRY_DELAY s, doubling up to 30 s), and seconds a release waits for another to finish.
# Defaults: about 2.5 minutes of retries, and both waits within the Kubernetes release Job's
# 600 s activeDeadlineSeconds.
MIGRATION_LOCK_TIMEOUT = env_number("MIGRATION_LOCK_TIMEOUT", 2, minimum=0.05, maximum=60)
MIGRATION_LOCK_RETRIES = env_int("MIGRATION_LOCK_RETRIES", 8, minimum=0, maximum=100)
MIGRATION_RETRY_DELAY = env_number("MIGRATION_RETRY_DELAY", 1, minimum=0, maximum=30)
RELEASE_LOCK_WAIT = env_number("RELEASE_LOCK_WAIT", 300, minimum=0, maximum=86400)

# Metrics (core/metrics.py; docs/observability.md, "Metrics"). METRICS_TOKEN: the bearer token of web's /metrics
# (404 while unset) and of the METRICS_PORT servers; an RFC 6750 b64token of at least 16 characters.
METRICS_TOKEN = env_str("METRICS_TOKEN")
if METRICS_TOKEN is not None and not re.fullmatch(r"[A-Za-z0-9._~+/-]{16,}=*", METRICS_TOKEN):
    raise ImproperlyConfigured(
        "METRICS_TOKEN is not a usable bearer token: use at least 16 characters of letters, digits and "
        "-._~+/ (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )
# worker, scheduler and mailer serve their metrics on METRICS_ADDR:METRICS_PORT when it is set.
METRICS_PORT = env_int("METRICS_PORT", 0, minimum=1, maximum=65535) if env_str("METRICS_PORT") else None
METRICS_ADDR = env_str("METRICS_ADDR", "0.0.0.0")

# Seconds a process type retries an unreachable PostgreSQL or Redis at start before it exits 1.
STARTUP_RETRY_SECONDS = env_number("STARTUP_RETRY_SECONDS", 30, minimum=0, maximum=600)
# Seconds: how long an idle RQ worker blocks on Redis is RQ_WORKER_TTL - 15, and its liveness
# key expires RQ_WORKER_TTL + 60 after its last heartbeat (rq's Worker.heartbeat).
RQ_WORKER_TTL = env_int("RQ_WORKER_TTL", 60, minimum=20)
MAILER_HEARTBEAT_SECONDS = env_number("MAILER_HEARTBEAT_SECONDS", 5, minimum=0)
