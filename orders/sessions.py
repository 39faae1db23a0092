"""Database sessions whose shared parts change under the session row's lock (settings.SESSION_ENGINE).

Django saves a whole session at the end of a request, so of two overlapping requests of one
shopper the later save wins and the earlier one's change is lost. Keys in LOCKED_KEYS (the cart)
are therefore never written by that save: they change only through ``SessionStore.locked_update``,
a read-modify-write on the row locked with SELECT … FOR UPDATE, and every other save keeps the
values those keys have in the row.
"""

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends import db
from django.contrib.sessions.models import Session
from django.db import connections, router, transaction

from orders.cart import SESSION_KEY as CART_SESSION_KEY

# Session keys changed only by SessionStore.locked_update: the cart's.
LOCKED_KEYS = frozenset({CART_SESSION_KEY})

# One batch of the expired-session clean-up. ORDER BY expire_date … LIMIT walks Django's index on
# expire_date (django_session_expire_date_a5c62663) instead of reading the whole table; now() is
# the database's clock, so a web or scheduler host whose clock is off cannot delete live sessions;
# SKIP LOCKED leaves a row a request holds (locked_update) to the next run instead of waiting on it.
# The rows are named by ctid through = ANY(ARRAY(…)), a Tid Scan: with `session_key IN (subquery)`
# PostgreSQL hash-joins the subquery against a sequential scan of the whole table.
CLEAR_BATCH_SQL = """
    DELETE FROM django_session WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM django_session WHERE expire_date < now()
        ORDER BY expire_date LIMIT %s FOR UPDATE SKIP LOCKED
    ))
"""


class SessionStore(db.SessionStore):
    """Django's database session store, plus ``locked_update`` for the keys in LOCKED_KEYS."""

    def _locked_row(self) -> Session | None:
        using = router.db_for_write(self.model, instance=None)
        return self.model.objects.using(using).select_for_update().filter(session_key=self.session_key).first()

    def _fresh(self, row: Session | None) -> dict[str, Any]:
        return self.decode(row.session_data) if row is not None else {}

    def locked_update(self, key: str, change: Callable[[Any], Any]) -> Any:
        """Set ``key`` to ``change(its value in the database row, or None)`` with the row locked; return the new value.

        A session without a row yet is created first. ``change`` may raise to leave the row as it
        was; what it raises propagates. A new value of None deletes the key. The row is written
        before this returns, so a concurrent request's change of ``key`` waits for this one and
        sees it.
        """
        if key not in LOCKED_KEYS:
            raise ValueError(f"{key!r} is not a locked session key")
        using = router.db_for_write(self.model, instance=None)
        with transaction.atomic(using=using):
            self._get_session()  # load: a cookie naming a missing or expired row gives no key
            if self.session_key is None:
                self.create()
            row = self._locked_row()
            if row is None:  # deleted meanwhile (clear_expired): a new row for this request
                self.create()
                row = self._locked_row()
            fresh = self._fresh(row)
            value = change(fresh.get(key))
            if value is None:
                fresh.pop(key, None)
                self._session.pop(key, None)
            else:
                fresh[key] = self._session[key] = value
            row.session_data = self.encode(fresh)
            row.save(update_fields=["session_data"], using=using)
        self.modified = True  # the cookie must name the row, which may be new
        return value

    @classmethod
    def clear_expired(cls) -> None:
        """Delete every session that expired before the database's now(), in batches; return None.

        Django's own clear_expired is one unbounded DELETE, which at millions of rows runs close to
        the statement timeout. Here each batch of at most settings.CLEANUP_BATCH_SIZE rows is
        its own statement in its own transaction (autocommit), repeated until a batch comes back
        short. Raises django.db.DatabaseError as the database does (a later run resumes).
        """
        using = router.db_for_write(cls.get_model_class(), instance=None)
        batch = settings.CLEANUP_BATCH_SIZE
        while True:
            with transaction.atomic(using=using), connections[using].cursor() as cursor:
                cursor.execute(CLEAR_BATCH_SQL, [batch])
                deleted = cursor.rowcount
            if deleted < batch:
                return

    def save(self, must_create: bool = False) -> None:
        """Save the session as Django does, but keep the row's values of LOCKED_KEYS."""
        if must_create or self.session_key is None:
            return super().save(must_create=must_create)
        using = router.db_for_write(self.model, instance=None)
        with transaction.atomic(using=using):
            row = self._locked_row()
            if row is not None:
                fresh = self._fresh(row)
                data = self._get_session()
                for key in LOCKED_KEYS:
                    if key in fresh:
                        data[key] = fresh[key]
                    else:
                        data.pop(key, None)
            return super().save(must_create=False)
