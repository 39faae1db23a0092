"""The base class of the errors that business rules raise (HackSoft Django-Styleguide's ApplicationError)."""


class ApplicationError(Exception):
    """A business rule refused an operation; ``message`` is written for the person who asked.

    Views show ``message`` as it is; ``extra`` (a dict) carries what a caller may need besides it
    (e.g. the order a refused checkout became). Built-in exceptions (ValueError, KeyError, …) are
    never shown: their text is for developers.
    """

    def __init__(self, message: str, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
