"""The deploy check that the statement timeout holds behind a transaction pooler (``check --deploy``).

Behind PgBouncer the app sends no ``options`` startup parameter, so DATABASE_STATEMENT_TIMEOUT
reaches PostgreSQL only as the role's setting, which the release phase writes and which each server
session reads when the pooler opens it (processes.release.role_timeout_set). A server session
opened before that write, or a role nobody set, runs statements without a limit: requests behind a
lock would then wait for gunicorn's WEB_TIMEOUT instead of answering 503. Documented in
docs/connections.md#pool-it.
"""

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.db import DatabaseError, connections

from core.preflight import first_line

TAG = "twelvefactor"


@register(TAG, Tags.database, deploy=True)
def check_pooled_statement_timeout(app_configs=None, **kwargs) -> list:
    """Warn (formation.W020) when DATABASE_POOLED and a pooled session's statement_timeout differs
    from DATABASE_STATEMENT_TIMEOUT (seconds), or when it cannot be asked; nothing when not pooled."""
    if not settings.DATABASE_POOLED:
        return []
    wanted = round(settings.DATABASE_STATEMENT_TIMEOUT * 1000)
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'")
            found = cursor.fetchone()[0]
    except DatabaseError as exc:
        return [
            Warning(
                f"Could not ask the pooled database for its statement_timeout: {first_line(exc)}",
                hint="Check DATABASE_URL (the pooler) and rerun `manage.py check --deploy`.",
                id="formation.W020",
            )
        ]
    if found == wanted:
        return []
    return [
        Warning(
            f"Pooled sessions run with statement_timeout {found} ms, not DATABASE_STATEMENT_TIMEOUT "
            f"({wanted} ms): a request behind a lock would wait for WEB_TIMEOUT instead of answering 503.",
            hint="Run the release phase (it writes the role's setting), then have the pooler open new server "
            "connections (PgBouncer: RECONNECT on its admin console, or a restart) (docs/connections.md#pool-it).",
            id="formation.W020",
        )
    ]
