"""Errors of tenancy use cases, carrying the form field they concern."""


class InvalidInput(ValueError):
    """Bad input for a use case; nothing was changed. `field` names the form field, if any."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
