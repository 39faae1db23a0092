"""The connection budget's arithmetic (processes.budget) is the one behind docs/connections.md's
tables, knows every long-running Procfile type, and the embedded runner says when a formation is
over its server's budget, asking the real test PostgreSQL."""

import os
import re
from pathlib import Path

import psycopg
import pytest

from embedded.__main__ import warn_over_budget
from processes.budget import (
    DEFAULT_HEADROOM,
    LONG_RUNNING_TYPES,
    ServerLimits,
    over_budget,
    parse_formation,
    peak_connections,
    server_limits,
)
from processes.procfile import formation_types

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "connections.md"


def table(heading: str) -> list[list[str]]:
    """Return the rows (cells, backticks dropped) of the first table after ``heading`` in docs/connections.md."""
    section = DOCS.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_long_running_types_are_the_procfiles():
    assert list(LONG_RUNNING_TYPES) == formation_types()


def test_a_formation_names_its_types_and_counts_the_others_once():
    assert parse_formation("") == {"web": 1, "worker": 1, "scheduler": 1, "mailer": 1}
    assert parse_formation(" worker=12 , mailer=0") == {"web": 1, "worker": 12, "scheduler": 1, "mailer": 0}


@pytest.mark.parametrize("text", ["wrker=3", "release=1", "worker=3,worker=4", "worker", "worker=-1", "worker=x"])
def test_a_malformed_formation_is_refused(text):
    with pytest.raises(ValueError):
        parse_formation(text)


def test_behind_a_pooler_the_server_side_is_the_pool_at_most():
    big = parse_formation("web=10,worker=20,mailer=5")
    assert peak_connections(big, web_concurrency=2) == 65
    assert peak_connections(big, web_concurrency=2, pool_size=30) == 30
    assert peak_connections(parse_formation(""), web_concurrency=2, pool_size=30) == 5


def test_behind_a_pooler_a_gateway_without_its_own_pool_connects_directly_from_every_worker():
    big = parse_formation("web=10,worker=20,mailer=5")
    # 45 clients go through the pool of 30; each worker's gateway connection goes around it.
    assert peak_connections(big, web_concurrency=2, pool_size=30, gateway_direct=True) == 30 + 20
    assert peak_connections(big, web_concurrency=2, gateway_direct=True) == 65  # no pooler: nothing changes


def test_the_docs_peaks_are_the_formulas():
    rows = table("The numbers")
    assert len(rows) >= 8, rows
    for where, formation, web_concurrency, pool, peak in rows:
        pool_size = None if pool == "—" else int(pool)
        computed = peak_connections(
            parse_formation(formation), web_concurrency=int(web_concurrency), pool_size=pool_size
        )
        assert computed == int(peak), where


def test_the_docs_servers_leave_what_the_formula_says():
    rows = table("Against a server")
    assert len(rows) >= 4, rows
    for server, ceiling, reserved, left in rows:
        limits = ServerLimits(max_connections=int(ceiling), superuser_reserved=0 if reserved == "—" else int(reserved))
        assert limits.for_formation(DEFAULT_HEADROOM) == int(left), server


def test_a_role_or_database_connection_limit_is_the_ceiling_when_lower():
    limits = ServerLimits(max_connections=500, superuser_reserved=3, role_limit=20)
    assert limits.for_formation(5) == 15
    message = over_budget(
        parse_formation("web=4,worker=8,mailer=2"), web_concurrency=2, pool_size=None, limits=limits, headroom=5
    )
    assert "26 PostgreSQL connections" in message and "the role's CONNECTION LIMIT 20" in message


def test_the_limits_are_asked_of_the_real_server():
    with psycopg.connect(os.environ["DATABASE_URL"]) as connection:
        limits = server_limits(connection)
        expected = connection.execute("SHOW max_connections").fetchone()[0]
    assert limits.max_connections == int(expected)
    assert limits.superuser_reserved >= 0 and limits.role_limit == -1


def test_the_runner_warns_with_the_numbers_when_its_formation_is_over_budget(capsys, monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url) as connection:
        allowed = server_limits(connection).for_formation(DEFAULT_HEADROOM)
    workers = allowed // 2 + 1  # 2 each: with web and mailer, more than allowed
    warn_over_budget(f"worker={workers}", url)
    line = capsys.readouterr().out
    peak = 2 + workers * 2 + 1
    assert re.search(rf"^formation: warning: The formation can hold {peak} PostgreSQL connections", line), line
    assert f"more than the {allowed} left" in line


def test_the_runner_says_nothing_when_its_formation_fits(capsys):
    warn_over_budget("", os.environ["DATABASE_URL"])
    assert capsys.readouterr().out == ""
