"""The server's TLS: one live ``SSLContext`` handed to uvicorn, re-read on SIGHUP.

uvicorn builds its context once and has no reload (and a SIGHUP would kill it): the
context here is built from ``--tls-cert-file``/``--tls-key-file`` (and, for mutual TLS,
``--tls-client-ca-file``), and :meth:`ServerTLS.reload` validates the files on a scratch
context first, then loads them into the live one. New handshakes get the new
certificate; open connections and parked long polls go on; files that do not load leave
the old certificate in place, with one error logged and counted. ``load_verify_locations``
only adds CAs: a client CA removed from the file stays trusted until a restart.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("metafs.server")


class TLSError(ValueError):
    """A certificate, key or CA file that does not load: says which, and why."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None


def _context(files: TLSFiles) -> ssl.SSLContext:
    """A server context from ``files`` (TLS 1.2 at least; a client certificate required
    when a client CA is given), or :class:`TLSError` naming the file and the reason."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"--tls-cert-file {files.cert} / --tls-key-file {files.key}: {_reason(exc)}") from None
    if files.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=files.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"--tls-client-ca-file {files.client_ca}: {_reason(exc)}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        text = str(exc)
        if "PEM lib" in text or "NO_START_LINE" in text:
            return "not a certificate (or key) in PEM form"
        if "KEY_VALUES_MISMATCH" in text:
            return "the key is not the certificate's"
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def not_after(cert: Path) -> float:
    """When the certificate in ``cert`` (its first, PEM) expires, as a Unix time."""
    decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    return ssl.cert_time_to_seconds(decoded["notAfter"])


class ServerTLS:
    """The live context and its files; ``on_reload(ok, expires)`` is told each reload's
    result and the certificate's expiry (for the metrics)."""

    def __init__(
        self, files: TLSFiles, on_reload: Callable[[bool, float], None] = lambda ok, when: None
    ) -> None:
        self.files = files
        self.on_reload = on_reload
        self.context = _context(files)  # raises at start: a server that cannot serve TLS does not start
        self.expires = not_after(files.cert)

    def reload(self) -> bool:
        """Re-read the files (SIGHUP): True when the new ones are in use."""
        try:
            _context(self.files)  # all of them load together, or none is taken
            self.context.load_cert_chain(self.files.cert, self.files.key)
            if self.files.client_ca is not None:
                self.context.load_verify_locations(cafile=self.files.client_ca)
            self.expires = not_after(self.files.cert)
        except (TLSError, OSError, ssl.SSLError, ValueError) as exc:
            log.error("SIGHUP: the TLS files were not reloaded, the old certificate stays: %s", exc)
            self.on_reload(False, self.expires)
            return False
        left = (self.expires - time.time()) / 86400
        log.warning("SIGHUP: TLS certificate reloaded from %s (expires in %.1f days)", self.files.cert, left)
        self.on_reload(True, self.expires)
        return True
