"""Exceptions raised by tunedeck.

    TunedeckError
    ├── InvalidInputError        bad create() parameters or data; lists every Problem found
    ├── RunNotFoundError         no run with that name
    ├── ServiceError             the service answered with an error, or an answer that is not the
    │   │                        service's (a proxy's HTML page), or the HTTP exchange itself failed
    │   └── AuthenticationError  missing or wrong token (HTTP 401)
    └── ServiceUnavailableError  no service could be reached or started
        └── ServiceTimeoutError  the service did not answer (or accept the connection) in time

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
    "ServiceTimeoutError",
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
    def from_dict(cls, d: dict[str, Any]) -> Problem:
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
    """No service answers at the client's URL (refused, reset, unreachable), or none could be started."""


class ServiceTimeoutError(ServiceUnavailableError):
    """The service did not answer a request (or accept its connection) within the request's timeout.

    Such a request is never retried: the service may have received it and may still be carrying it
    out (a create() that timed out can still make the run; look with fm.list() before trying again).
    """

    def __init__(self, message: str, url: str | None = None, path: str | None = None, timeout: float | None = None):
        super().__init__(message)
        self.url = url
        self.path = path
        self.timeout = timeout
