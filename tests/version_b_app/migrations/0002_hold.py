"""Keep B's release running while version A's shoppers check out against the expanded schema.

Test knobs (default 0: no hold): ``VERSION_B_HOLD_ORDERS``, orders to wait for, placed after this
step began (by then 0001's columns are committed); ``VERSION_B_HOLD_SECONDS``, the most seconds to
wait. It only reads orders_order (ACCESS SHARE, which no shop query waits for).
"""

import os
import time

from django.db import migrations


def hold(apps, schema_editor):
    wanted = int(os.environ.get("VERSION_B_HOLD_ORDERS", "0"))
    end = time.monotonic() + float(os.environ.get("VERSION_B_HOLD_SECONDS", "0"))
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        began = cursor.fetchone()[0]
        while wanted and time.monotonic() < end:
            # Read committed: each statement sees the orders committed since the one before.
            cursor.execute("SELECT count(*) FROM orders_order WHERE created_at > %s", [began])
            if cursor.fetchone()[0] >= wanted:
                return
            cursor.execute("SELECT pg_sleep(0.1)")


class Migration(migrations.Migration):
    dependencies = [("version_b_app", "0001_order_expand")]

    operations = [migrations.RunPython(hold, migrations.RunPython.noop)]
