"""The service layer's root exception and its kinds. Only api/errors.py maps them to HTTP codes."""


class ServiceError(Exception):
    """Root of every refusal the service layer makes; the message is shown to the client."""


class Unauthorized(ServiceError):
    """No key, or a key that does not authenticate."""


class NotFound(ServiceError):
    pass


class Forbidden(ServiceError):
    pass


class Conflict(ServiceError):
    """The request is valid but the state forbids it (attempts used up, task not ready)."""


class InvalidInput(ServiceError):
    """Well-formed but unacceptable input (a spec failing its schema, bad blanks, a bad URL);
    `problems` holds each (the field path it names, or "", and what is wrong there)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [("", message)]


class TooLarge(ServiceError):
    pass


class Unavailable(ServiceError):
    """A dependency (database, broker) is down or the queue is full: try again later."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Gone(ServiceError):
    """What was asked for existed but is used up or expired (a learner's link opened before)."""
