from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself as an app: process-type commands (rqworker, rqscheduler, probe)."""

    name = "project"
    verbose_name = "Formation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from project import checks  # noqa: F401 - registers the twelvefactor system checks
