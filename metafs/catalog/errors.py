"""What the catalog refuses, each with the HTTP status the server answers it with."""

from __future__ import annotations


class CatalogError(Exception):
    """A request the catalog refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class BadRequest(CatalogError):
    status = 400


class Forbidden(CatalogError):
    status = 403


class NotFound(CatalogError):
    status = 404


class Exists(CatalogError):
    status = 409


class CasFailed(CatalogError):
    """A check-and-set write whose index did not hold: nothing was written."""

    status = 409
