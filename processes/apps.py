from django.apps import AppConfig


class ProcessesConfig(AppConfig):
    """The process runtime as an app: every Procfile entry point's management command (migrate for
    the release phase, rqworker, rqscheduler, mailer, probe, parity) and the twelve-factor checks."""

    name = "processes"
    verbose_name = "Process types"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from processes import checks, pooled  # noqa: F401 - register the twelvefactor system checks
