"""The reference client's exceptions (``databricks.model_training.exceptions``, its ``api.exceptions``).

Every error tunedeck raises on purpose is a ``DatabricksGenAIError``, which here *is* TunedeckError.
Where the reference raises a more specific class, tunedeck's error is also an instance of it:

    get() of an unknown run            RunNotFoundError + DatabricksGenAIResponseError
    create() with invalid inputs       InvalidInputError + ValidationError + MAPIException (status 400)
    cancel() that fails                DatabricksModelTrainingRequestError (the cause chained)
    cancel() with neither/both args    DatabricksModelTrainingRequestError
    get_checkpoints() that fails       DatabricksGenAIResponseError (the cause chained)

MAPIException and its subclasses exist so that ``except MAPIException`` clauses keep working; tunedeck
has no MAPI, so it raises one only as the invalid-input error above.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tunedeck.errors import InvalidInputError, Problem, RunNotFoundError, TunedeckError

__all__ = [
    "DatabricksGenAIConfigError",
    "DatabricksGenAIError",
    "DatabricksGenAIResponseError",
    "DatabricksModelTrainingRequestError",
    "InvalidInputs",
    "MAPIException",
    "MultiMAPIException",
    "RunConfigException",
    "RunNotFound",
    "ValidationError",
]

DEFAULT_MESSAGE = "Unknown Error"

DatabricksGenAIError = TunedeckError


class _WithMessage(TunedeckError):
    """A TunedeckError with the reference's ``.message``."""

    def __init__(self, message: str = ""):
        self.message = message
        super().__init__(message)


class DatabricksModelTrainingRequestError(_WithMessage):
    """The request could not be carried out (cancel)."""


class DatabricksGenAIResponseError(_WithMessage):
    """The answer was not what was asked for (an unknown run, checkpoints that cannot be read)."""


class DatabricksGenAIConfigError(_WithMessage):
    """A training configuration that cannot be used."""


class ValidationError(_WithMessage):
    """An input create() refused."""


class MAPIException(TunedeckError):
    """The reference's error for a failed MAPI request: ``status``, ``message``, ``description``."""

    def __init__(self, status: HTTPStatus, message: str = DEFAULT_MESSAGE, description: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.description = description

    def __str__(self) -> str:
        text = f"Error {self.status}: {self.message}"
        return f"{text}. {self.description}" if self.description else text


class MultiMAPIException(MAPIException):
    def __init__(self, errors: list[MAPIException]) -> None:
        self.errors = errors
        super().__init__(max(e.status for e in errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class RunConfigException(MAPIException):
    pass


class RunNotFound(RunNotFoundError, DatabricksGenAIResponseError):
    """No run with that name: a RunNotFoundError (tunedeck) and a DatabricksGenAIResponseError (reference)."""


class InvalidInputs(InvalidInputError, ValidationError, MAPIException):
    """create()'s refusal: an InvalidInputError listing every Problem (tunedeck), a ValidationError and a
    MAPIException with status 400 (reference)."""

    def __init__(self, problems: list[Problem]):  # each base's __init__ takes other arguments: set all here
        text = str(InvalidInputError(problems))
        Exception.__init__(self, text)
        self.problems = list(problems)
        self.message = text
        self.status = HTTPStatus.BAD_REQUEST
        self.description = None

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))
