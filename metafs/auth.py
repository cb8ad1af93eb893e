"""Tokens and scopes: who may read what.

Four kinds of token:

- **operator**: reads everything, writes, mints and revokes tokens. The first one comes
  from a file (made on first start, mode 0600) or ``$METAFS_OPERATOR_TOKEN``.
- **host**: what a mount daemon holds; reads the views of the units placed on its host
  (a unit's ``host`` field), the seed paths of their services, nothing else.
- **unit**: what a container may hold; reads its own view and the seed paths of its own
  service, nothing of another service or account; never writes.
- **reader**: what a dashboard, a scraper or an auditor holds; reads what an operator
  reads (``/metrics`` too, with ``--metrics-auth token``), writes nothing, mints no tokens.

A token is ``mfs_<kind>_<random>``; the store keeps only its SHA-256, under the first 16
hex digits (the token's public id), and the full digest is compared in constant time.
Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["operator", "host", "unit", "reader"]
KINDS: tuple[Kind, ...] = ("operator", "host", "unit", "reader")
ID_LEN = 16


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: a token's kind and subject (a host name or a unit id)."""

    kind: Kind
    subject: str = ""
    token_id: str = ""

    @property
    def operator(self) -> bool:
        return self.kind == "operator"


def new_token(kind: Kind) -> str:
    return f"mfs_{kind}_{secrets.token_urlsafe(32)}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token_digest: str) -> str:
    return token_digest[:ID_LEN]


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer(header: str | None, bare: bool = False) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None. ``bare``: a
    header that is a token alone counts too (Prometheus' HTTP SD sends that unless its
    ``authorization`` says ``type: Bearer``: prometheus/docs#2377)."""
    if not header:
        return None
    if bare and " " not in header.strip():
        return header.strip()
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def operator_token(path: Path | None) -> tuple[str, Path | None]:
    """The bootstrap operator token's digest: from ``$METAFS_OPERATOR_TOKEN``, else from
    ``path``, which is created (0600, a new random token) when it does not exist."""
    if env := os.environ.get("METAFS_OPERATOR_TOKEN"):
        return digest(env.strip()), None
    if path is None:
        raise ValueError("no operator token: set METAFS_OPERATOR_TOKEN or give --operator-token-file")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_token("operator") + "\n")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"operator token file {path} is empty")
    return digest(token), path
