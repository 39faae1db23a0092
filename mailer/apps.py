from django.apps import AppConfig


class MailerConfig(AppConfig):
    name = "mailer"
    verbose_name = "Email outbox"

    def ready(self):
        from mailer import metrics  # noqa: F401 - registers its collector (core.metrics.collector_register)
