"""Dev/prod parity report: the backing services in use here beside the versions the deployment
files pin (docker-compose.yml images; the Kubernetes ConfigMap's version annotations)."""

import smtplib
from dataclasses import dataclass
from pathlib import Path

import django_rq
import yaml
from django.conf import settings
from django.db import connection

from core.preflight import first_line
from core.queues import DEFAULT_QUEUE

K8S_CONFIGMAP = Path("deploy/kubernetes/configmap.yaml")
K8S_ANNOTATION = "formation.example/{}-version"


@dataclass
class Row:
    """One service: what runs here and what the deployment files pin (None: not pinned there)."""

    service: str
    here: str
    here_version: str | None
    compose: str | None
    kubernetes: str | None

    @property
    def mismatches(self) -> list[str]:
        """Return the deployment files whose pinned major version differs from the one here."""
        if self.here_version is None:
            return []
        here = major(self.here_version)
        pinned = {"docker-compose.yml": self.compose, "kubernetes": self.kubernetes}
        return [where for where, version in pinned.items() if version and major(version) != here]


def major(version: str) -> str:
    """Return the major version of ``version`` (``"18.6"`` → ``"18"``, ``"7.4-alpine"`` → ``"7"``)."""
    return version.split(".")[0].split("-")[0]


def _compose_images(base: Path) -> dict[str, str]:
    try:
        services = yaml.safe_load((base / "docker-compose.yml").read_text())["services"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    return {name: service.get("image", "") for name, service in services.items() if isinstance(service, dict)}


def _k8s_versions(base: Path) -> dict[str, str]:
    try:
        annotations = yaml.safe_load((base / K8S_CONFIGMAP).read_text())["metadata"]["annotations"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {}
    return {name: annotations.get(K8S_ANNOTATION.format(name)) for name in ("postgresql", "redis")}


def _tag(image: str | None) -> str | None:
    return image.rsplit(":", 1)[1] if image and ":" in image else None


def parity_report(*, base: Path | None = None) -> list[Row]:
    """Return the PostgreSQL, Redis and SMTP rows; query each service with its connect timeout.

    A service that cannot be reached is reported as such (its version None), never raised.
    """
    base = base or settings.BASE_DIR
    images, k8s = _compose_images(base), _k8s_versions(base)
    db = connection.settings_dict
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0].split()[0]
        pg_here = f"PostgreSQL {pg_version} at {db['HOST'] or 'local socket'}:{db['PORT'] or 5432}/{db['NAME']}"
    except Exception as exc:  # report, do not fail: the report is for finding such problems
        pg_version, pg_here = None, f"unreachable ({first_line(exc)})"
    redis_connection = django_rq.get_connection(DEFAULT_QUEUE)
    redis_where = "{host}:{port}/{db}".format(
        **{"host": "?", "port": "?", "db": 0, **redis_connection.get_connection_kwargs()}
    )
    try:
        redis_version = redis_connection.info("server")["redis_version"]
        redis_here = f"Redis {redis_version} at {redis_where}"
    except Exception as exc:
        redis_version, redis_here = None, f"unreachable at {redis_where} ({exc})"
    try:
        with smtplib.SMTP(settings.EMAIL_HOST, settings.EMAIL_PORT, timeout=settings.EMAIL_TIMEOUT) as smtp:
            code, _ = smtp.noop()
        smtp_here = f"SMTP at {settings.EMAIL_HOST}:{settings.EMAIL_PORT} answers {code}"
    except (OSError, smtplib.SMTPException) as exc:
        smtp_here = f"SMTP at {settings.EMAIL_HOST}:{settings.EMAIL_PORT} unreachable ({exc})"
    return [
        Row("PostgreSQL", pg_here, pg_version, _tag(images.get("postgres")), k8s.get("postgresql")),
        Row("Redis", redis_here, redis_version, _tag(images.get("redis")), k8s.get("redis")),
        Row("SMTP", smtp_here, None, images.get("mailpit"), "EMAIL_URL from the Secret"),
    ]
