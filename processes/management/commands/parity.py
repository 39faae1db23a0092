"""Print the dev/prod parity report and fail on a major-version difference.

    python manage.py parity [--warn]

For PostgreSQL and Redis: the server version in use here (DATABASE_URL, REDIS_URL) beside the
version pinned in docker-compose.yml and in the Kubernetes ConfigMap's annotations; for SMTP,
the endpoint here (EMAIL_URL) and whether it answers. Exit 1 when a major version differs
(exit 0 with --warn), 0 otherwise.
"""

from django.core.management.base import BaseCommand, CommandError

from processes.parity import parity_report


class Command(BaseCommand):
    help = "Compare the backing services in use with the versions the deployment files pin."

    def add_arguments(self, parser):
        parser.add_argument("--warn", action="store_true", help="Report major-version differences, exit 0 anyway.")

    def handle(self, *args, warn: bool = False, **options):
        rows = parity_report()
        header = ("service", "here", "docker-compose.yml", "kubernetes", "parity")
        table = [header]
        for row in rows:
            verdict = "n/a" if row.here_version is None else "MAJOR DIFFERS" if row.mismatches else "same major"
            table.append((row.service, row.here, row.compose or "-", row.kubernetes or "-", verdict))
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for line in table:
            self.stdout.write("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))
        differing = [
            f"{row.service} {row.here_version} vs {', '.join(row.mismatches)}" for row in rows if row.mismatches
        ]
        if differing:
            message = "major version differs: " + "; ".join(differing)
            if not warn:
                raise CommandError(message)
            self.stderr.write(f"warning: {message}")
