"""The metadata catalog: the model's records laid out in a store (:mod:`.keys`,
:mod:`.records`), read as trees (:mod:`.reads`: :mod:`.views`, :mod:`.layouts`) for a
scope (:mod:`.scope`), and written atomically (:mod:`.writes`)."""

from __future__ import annotations

from .errors import BadRequest, CasFailed, CatalogError, Exists, Forbidden, NotFound
from .reads import Reads
from .scope import AccountScopes, Scope, authenticate, scope_of
from .writes import WriteResult, Writes

__all__ = [
    "AccountScopes",
    "BadRequest",
    "CasFailed",
    "CatalogError",
    "Exists",
    "Forbidden",
    "NotFound",
    "Reads",
    "Scope",
    "WriteResult",
    "Writes",
    "authenticate",
    "scope_of",
]
