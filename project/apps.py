from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself as an app: process-type commands (rqworker, rqscheduler, probe)."""

    name = "project"
    verbose_name = "Formation"
    default_auto_field = "django.db.models.BigAutoField"
