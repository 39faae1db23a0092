"""Read typed configuration from the environment (twelve-factor, factor 3).

Every reader raises ``django.core.exceptions.ImproperlyConfigured`` with a message that
starts with the variable's name, so a missing or malformed value stops start-up with one
line that tells the operator what to fix.
"""

import math
import os
import re
import socket
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
import dj_email_url
import redis
from django.core.exceptions import ImproperlyConfigured

# The database ENGINE every process uses: Django's PostgreSQL backend, its health check changed.
from core.postgresql import ENGINE as POSTGRESQL_ENGINE
from processes.budget import parse_formation

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    """Return the variable ``name`` as a string, or ``default`` when it is unset or empty.

    Raise ImproperlyConfigured when ``required`` and the variable is unset or empty.
    """
    value = os.environ.get(name, "")
    if value == "":
        if required:
            raise ImproperlyConfigured(f"{name} is not set: it is required (see docs/configuration.md)")
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    """Return the variable ``name`` as a bool (1/true/yes/on or 0/false/no/off, any case).

    Raise ImproperlyConfigured for any other value.
    """
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def env_number(name: str, default: float, *, minimum: float = 0, maximum: float | None = None) -> float:
    """Return the variable ``name`` as a float in [minimum, maximum], or ``default`` when unset.

    Raise ImproperlyConfigured when the value is not a number or lies outside the range.
    """
    value = os.environ.get(name, "")
    if value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"{name}={value!r} is not a finite number")
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise ImproperlyConfigured(f"{name}={value!r} is out of range: it must be {bound}")
    return number


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Return the variable ``name`` as an int in [minimum, maximum], or ``default`` when unset.

    Raise ImproperlyConfigured when the value is not an integer or lies outside the range.
    """
    value = os.environ.get(name, "")
    if value.strip() != "":
        try:
            int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    return int(env_number(name, default, minimum=minimum, maximum=maximum))


def web_server_settings() -> dict[str, int]:
    """Return the web process type's settings from PORT, WEB_CONCURRENCY, WEB_TIMEOUT and
    WEB_GRACEFUL_TIMEOUT (timeouts in seconds), validated.

    Read by the gunicorn config file and by the settings module, so the release phase and
    ``manage.py check`` reject a bad value before web starts (gunicorn itself reads
    WEB_CONCURRENCY with a bare int() and would fail with a traceback).
    Raise ImproperlyConfigured naming the variable.
    """
    return {
        "port": env_int("PORT", 8000, minimum=1, maximum=65535),
        "workers": env_int("WEB_CONCURRENCY", 2, minimum=1, maximum=64),
        "timeout": env_int("WEB_TIMEOUT", 30, minimum=1),
        "graceful_timeout": env_int("WEB_GRACEFUL_TIMEOUT", 25, minimum=1),
    }


def env_list(name: str, default: list[str]) -> list[str]:
    """Return the variable ``name`` split on commas, blanks dropped, or ``default`` when unset."""
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_formation(name: str) -> dict[str, int]:
    """Return the variable ``name`` (``web=3,worker=12``) as {long-running process type: processes}.

    A type it does not name counts as one process, so unset is one of each
    (processes.budget.parse_formation). Raise ImproperlyConfigured naming the variable when the
    value is malformed.
    """
    try:
        return parse_formation(env_str(name, ""))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from None


def keepalive_options(silence_timeout: float) -> dict[str, int]:
    """Return libpq's TCP keepalive parameters that end a silent connection in ``silence_timeout`` s.

    A peer that vanishes without closing (an expired NAT entry, a host gone) leaves a connection
    that the kernel keeps open for hours (tcp_keepalive_time 7200 s, retransmissions ~15 min), and
    a query on it hangs that long (psycopg2#1017). The result has libpq's keys
    (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-KEEPALIVES): ``keepalives``
    1, ``keepalives_idle`` a third of the bound, ``keepalives_interval`` and ``keepalives_count``
    so that the probes span the rest (seconds, at least 1), and ``tcp_user_timeout``
    (milliseconds), which also ends a connection whose sent data stays unacknowledged, the case
    keepalives do not cover (they only probe an idle socket). ``silence_timeout`` must be >= 4
    (1 s idle plus 3 probes 1 s apart).
    """
    idle = max(1, int(silence_timeout // 3))
    count = 3
    interval = max(1, int((silence_timeout - idle) // count))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": round(silence_timeout * 1000),
    }


def redis_keepalive_options(silence_timeout: float) -> dict:
    """Return redis-py connection keywords that end a silent Redis connection in ``silence_timeout`` s.

    ``socket_keepalive`` and ``socket_keepalive_options`` (TCP_KEEPIDLE, TCP_KEEPINTVL,
    TCP_KEEPCNT, in seconds, the figures of keepalive_options). Keepalives rather than a short
    ``socket_timeout``: RQ's worker blocks in BLPOP for up to its worker_ttl - 15 s with its own
    read timeout above that (rq/worker.py), so a read timeout shorter than the pop would raise
    on every idle worker; a keepalive probe goes unanswered only when the link is dead, and the
    kernel then fails the blocked read (ETIMEDOUT), which redis-py raises as ConnectionError.
    ``silence_timeout`` must be >= 4.
    """
    options = keepalive_options(silence_timeout)
    return {
        "socket_keepalive": True,
        "socket_keepalive_options": {
            socket.TCP_KEEPIDLE: options["keepalives_idle"],
            socket.TCP_KEEPINTVL: options["keepalives_interval"],
            socket.TCP_KEEPCNT: options["keepalives_count"],
        },
    }


def env_database(
    name: str,
    *,
    conn_max_age: int,
    conn_health_checks: bool,
    connect_timeout: int,
    statement_timeout: float,
    silence_timeout: float = 15,
    application_name: str = "formation",
    pooled: bool = False,
) -> dict:
    """Return Django's ``DATABASES`` entry for the PostgreSQL URL in the required variable ``name``.

    ``conn_max_age`` and ``connect_timeout`` are in seconds, and ``application_name`` (what
    ``pg_stat_activity`` shows) is ``application_name`` unless the URL sets one.
    ``statement_timeout`` (seconds) is set on every connection through libpq's ``options``, unless
    ``pooled``: a transaction pooler (PgBouncer) refuses that startup parameter ("unsupported
    startup parameter: options") and would hand a session's settings to other clients, so a pooled
    entry sends no ``options``, turns off server-side cursors and prepared statements (Django,
    https://docs.djangoproject.com/en/5.2/ref/databases/#transaction-pooling-server-side-cursors;
    psycopg's ``prepare_threshold``), and leaves the timeout to the role's setting that the release
    phase writes (processes.release.role_timeout_set). Raise ImproperlyConfigured naming the
    variable when it is unset, malformed, not a PostgreSQL URL, or names no database.
    ``silence_timeout`` (seconds) bounds how long a connection that went silent without being
    closed (an expired NAT entry, a vanished host) can hang a query: libpq's TCP keepalives and
    tcp_user_timeout (keepalive_options), pooled or not, as they act on the client's own socket.
    """
    url = env_str(name, required=True)
    try:
        database = dj_database_url.parse(url, conn_max_age=conn_max_age, conn_health_checks=conn_health_checks)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from None
    if database.get("ENGINE") != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"{name} must be a PostgreSQL URL (postgres://user:password@host:port/name); "
            f"the {urlsplit(url).scheme or 'given'!s} engine is refused"
        )
    # Django's PostgreSQL backend with a health check that sends no query (core/postgresql/base.py).
    database["ENGINE"] = POSTGRESQL_ENGINE
    if not database.get("NAME"):
        raise ImproperlyConfigured(f"{name} names no database: postgres://user:password@host:port/name")
    options = database.setdefault("OPTIONS", {})
    options["connect_timeout"] = connect_timeout
    options.setdefault("application_name", application_name)
    for key, value in keepalive_options(silence_timeout).items():
        options.setdefault(key, value)
    if pooled:
        database["DISABLE_SERVER_SIDE_CURSORS"] = True
        options["prepare_threshold"] = None
        return database
    statement = f"-c statement_timeout={round(statement_timeout * 1000)}"
    options["options"] = f"{options.get('options', '')} {statement}".strip()
    return database


# The variables a platform sets to the build it runs, in the order they are asked: our own, then
# Heroku's build-time SOURCE_VERSION and its dyno metadata's HEROKU_SLUG_COMMIT.
RELEASE_VARIABLES = ("RELEASE_VERSION", "SOURCE_VERSION", "HEROKU_SLUG_COMMIT")
# Characters a release id may keep (it is part of log lines, metric labels, RQ worker names and
# PostgreSQL's application_name); any other becomes "-".
_RELEASE_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def release_version(checkout: Path | None = None) -> str:
    """Return the id of the release this process runs: a version, commit or image tag (a str).

    The first of RELEASE_VARIABLES that is set, else the commit of the git checkout ``checkout``
    (the repository root by default; read from its .git files, no git program needed), else
    "unknown". At most 40 characters of ``A-Za-z0-9._+-``; any other character becomes "-".
    Documented in docs/releases.md#which-release-runs.
    """
    for name in RELEASE_VARIABLES:
        if value := env_str(name):
            return _RELEASE_UNSAFE.sub("-", value.strip())[:40] or "unknown"
    return _git_commit(checkout or Path(__file__).resolve().parent.parent) or "unknown"


def _git_commit(checkout: Path) -> str | None:
    """Return the first 12 hex digits of HEAD's commit in ``checkout``, or None when it cannot be read."""
    git = checkout / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (checkout / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head.removeprefix("ref: ")
        common = git / "commondir"
        roots = [git, (git / common.read_text().strip()).resolve()] if common.is_file() else [git]
        for root in roots:
            if (root / ref).is_file():
                return (root / ref).read_text().strip()[:12]
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(f" {ref}"):
                        return line.split()[0][:12]
    except (OSError, IndexError):
        return None
    return None


def env_redis_url(name: str, *, connect_timeout: float, password_name: str | None = None) -> str:
    """Return the Redis URL in the required variable ``name``, with connection options added.

    ``socket_connect_timeout`` (``connect_timeout``, seconds) and ``health_check_interval`` (30 s)
    go into the URL's query unless it sets them, because django-rq builds its connection from the
    URL alone (django_rq/connection_utils.py). The variable ``password_name``, when set and not
    empty, is the password of a URL that carries none, as libpq reads PGPASSWORD: it goes into the
    query as ``password`` (redis-py's ``from_url`` reads it there, for every scheme), so a Secret
    can hold the password alone, where KEDA's Redis scaler reads it too. Raise ImproperlyConfigured
    naming the variable when it is unset, not a redis://, rediss:// or unix:// URL, or malformed (no
    host, a bad port or a database that is not a number), and naming both variables when the URL
    has a password of its own and ``password_name`` is set too (which one would count is a guess).
    """
    url = env_str(name, required=True)
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name} must start with redis://, rediss:// or unix://")
    query = dict(parse_qsl(parts.query))
    password = env_str(password_name, "") if password_name else ""
    if password:
        if parts.password is not None or "password" in query:
            raise ImproperlyConfigured(f"{name} has a password and {password_name} is set too: keep one of them")
        query["password"] = password
    query.setdefault("socket_connect_timeout", f"{connect_timeout:g}")
    query.setdefault("health_check_interval", "30")
    result = urlunsplit(parts._replace(query=urlencode(query)))
    database = parts.path.strip("/")
    try:
        redis.ConnectionPool.from_url(result)  # parses host, port and options without connecting
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("no host")
        if parts.scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"database {database!r} is not a number")
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name} is malformed ({exc}): use redis://[:password@]host:port/db") from None
    return result


def env_email(name: str, default: str) -> dict:
    """Return the SMTP settings parsed from the variable ``name`` (``default`` when unset).

    The URL is smtp://[user:password@]host:port with ?tls=True or ?ssl=True
    (https://github.com/migonzalvar/dj-email-url); the result has dj-email-url's keys
    (EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS, EMAIL_USE_SSL,
    EMAIL_TIMEOUT in seconds or None). Raise ImproperlyConfigured naming the variable when the
    URL is not SMTP, is malformed or names no host.
    """
    url = env_str(name, default)
    if urlsplit(url).scheme not in {"smtp", "smtps", "submission", "submit"}:
        raise ImproperlyConfigured(f"{name} must be an SMTP URL: smtp://[user:password@]host:port")
    try:
        email = dj_email_url.parse(url)
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"{name} is malformed: {exc}") from None
    if not urlsplit(url).hostname:
        raise ImproperlyConfigured(f"{name} names no host: smtp://[user:password@]host:port")
    return email
