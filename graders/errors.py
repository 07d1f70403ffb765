"""The grading core's root exception and its subclasses."""


class GraderError(Exception):
    """Root of every error raised by the grading core itself (never by a student)."""


class SpecError(GraderError):
    """A spec is unreadable or breaks the schema; the message names the field, and
    `problems` holds each (the field path it names, what is wrong there)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [("", message)]


class FactsError(GraderError):
    """Facts that came back from a sandbox are missing, oversized or malformed."""


class UnknownTaskError(GraderError):
    """No task with that id exists in the task bank."""


class AnswerError(GraderError):
    """An answer cannot be graded as given (blank fills that do not fit the template)."""
