"""The parity report: versions here beside those pinned in docker-compose.yml and Kubernetes."""

import pytest
from django.core.management import CommandError, call_command

from project.parity import Row, major, parity_report

pytestmark = pytest.mark.django_db


def test_major_versions():
    assert major("18.6") == "18"
    assert major("7.4-alpine") == "7"
    assert major("6.2.14") == "6"


def test_report_names_the_versions_in_use_and_pinned(smtp):
    rows = {row.service: row for row in parity_report()}
    assert rows["PostgreSQL"].here_version and rows["PostgreSQL"].compose == "18"
    assert rows["PostgreSQL"].kubernetes == "18"
    assert rows["Redis"].here_version and rows["Redis"].compose == "7.4"
    assert "answers 250" in rows["SMTP"].here


def test_mismatch_fails_unless_told_to_warn(capsys):
    differs = Row("Redis", "here", "6.2.14", "7.4", "7.4")
    assert differs.mismatches == ["docker-compose.yml", "kubernetes"]
    assert Row("PostgreSQL", "here", "18.6", "18", "18").mismatches == []
    rows = parity_report()
    if any(row.mismatches for row in rows):
        with pytest.raises(CommandError, match="major version differs"):
            call_command("parity")
    else:
        call_command("parity")
    call_command("parity", "--warn")
    assert "PostgreSQL" in capsys.readouterr().out
