"""Exceptions raised by tunedeck.

    TunedeckError
    ├── InvalidInputError        bad create() parameters or data; lists every Problem found
    ├── RunNotFoundError         no run with that name
    ├── ServiceError             the service answered with an error
    │   └── AuthenticationError  missing or wrong token (HTTP 401)
    └── ServiceUnavailableError  no service could be reached or started

InvalidInputError is also a ValueError, so code written against the reference client that catches
ValueError keeps working.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "AuthenticationError",
    "InvalidInputError",
    "Problem",
    "RunNotFoundError",
    "ServiceError",
    "ServiceUnavailableError",
    "TunedeckError",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, and where it is."""

    field: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.field
        if self.file:
            where += f" ({self.file}" + (f", line {self.line}" if self.line else "") + ")"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Problem":
        return cls(d["field"], d["message"], d.get("file"), d.get("line"))


class TunedeckError(Exception):
    """Base class of every error tunedeck raises on purpose."""


class InvalidInputError(TunedeckError, ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) with the training run's inputs:\n{lines}")


class RunNotFoundError(TunedeckError, LookupError):
    pass


class ServiceError(TunedeckError):
    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(ServiceError):
    pass


class ServiceUnavailableError(TunedeckError):
    pass
