"""The parity report: versions here beside those pinned in docker-compose.yml and Kubernetes."""

from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from processes.parity import K8S_ANNOTATION, K8S_CONFIGMAP, Row, major, parity_report

pytestmark = pytest.mark.django_db


def test_major_versions():
    assert major("18.6") == "18"
    assert major("7.4-alpine") == "7"
    assert major("6.2.14") == "6"


def test_report_names_the_versions_in_use_and_pinned(smtp):
    rows = {row.service: row for row in parity_report()}
    assert rows["PostgreSQL"].here_version and rows["PostgreSQL"].compose == "18"
    assert rows["PostgreSQL"].kubernetes == "18"
    assert rows["Redis"].here_version and rows["Redis"].compose == "8.2"
    assert rows["Redis"].kubernetes == "8.2"
    assert "answers 250" in rows["SMTP"].here


def test_rows_compare_major_versions():
    differs = Row("Redis", "here", "6.2.14", "7.4", "7.4")
    assert differs.mismatches == ["docker-compose.yml", "kubernetes"]
    assert Row("PostgreSQL", "here", "18.6", "18", "18").mismatches == []
    assert Row("Redis", "here", "8.2.3", "8.2", "7.4").mismatches == ["kubernetes"]


def servers_here() -> tuple[str, str]:
    """Return the PostgreSQL and Redis versions of the servers these tests run against."""
    rows = {row.service: row for row in parity_report()}
    return rows["PostgreSQL"].here_version, rows["Redis"].here_version


def pin(base: Path, *, postgres: str, redis: str) -> None:
    """Write deployment files under ``base`` that pin these versions (compose images, ConfigMap)."""
    compose = {"services": {"postgres": {"image": f"postgres:{postgres}"}, "redis": {"image": f"redis:{redis}"}}}
    (base / "docker-compose.yml").write_text(yaml.safe_dump(compose))
    configmap = base / K8S_CONFIGMAP
    configmap.parent.mkdir(parents=True)
    annotations = {K8S_ANNOTATION.format("postgresql"): postgres, K8S_ANNOTATION.format("redis"): redis}
    configmap.write_text(yaml.safe_dump({"metadata": {"annotations": annotations}}))


def test_same_major_versions_pass(settings, tmp_path, capsys):
    postgres, redis = servers_here()
    pin(tmp_path, postgres=major(postgres), redis=f"{major(redis)}.99")
    settings.BASE_DIR = tmp_path
    call_command("parity")
    out = capsys.readouterr().out
    assert out.count("same major") == 2, out
    assert "MAJOR DIFFERS" not in out


def test_a_differing_major_version_fails_unless_told_to_warn(settings, tmp_path, capsys):
    postgres, redis = servers_here()
    other = str(int(major(redis)) + 1)
    pin(tmp_path, postgres=major(postgres), redis=f"{other}.0")
    settings.BASE_DIR = tmp_path
    with pytest.raises(CommandError, match=f"major version differs: Redis {redis} vs docker-compose.yml, kubernetes$"):
        call_command("parity")
    call_command("parity", "--warn")
    captured = capsys.readouterr()
    assert f"warning: major version differs: Redis {redis}" in captured.err
    assert "PostgreSQL" in captured.out
