"""How a client reaches https servers: the CA it trusts, the client certificate it shows,
and what a failed connection means, in words a person reads once."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


class TLSConfigError(ValueError):
    """A CA, certificate or key file that does not load: says which, and why."""


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How a client reaches https servers: the CA that signed them (default: the
    system's), and a client certificate and key for servers that ask for one."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def verify_for(roots: list[str], tls: TLSOptions) -> ssl.SSLContext:
    """For https servers, a context that trusts ``tls.ca_file`` (else the system's CAs)
    and presents ``tls.cert_file``; for plain http, a context with no certificates, which
    would refuse any TLS peer: loading them costs ~90 ms of every client's start (a
    restarted mount daemon's, every CLI command's) for nothing."""
    if not any(urlsplit(root).scheme == "https" for root in roots):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"--ca-file {tls.ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    if tls.cert_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise TLSConfigError(f"--cert-file {tls.cert_file} / --key-file {tls.key_file}: {why}") from None
    return ctx


#: what OpenSSL says, and what it means to the person who reads the message
_TLS_WHY = (
    (
        "unable to get local issuer certificate",
        "unknown CA: the server's certificate is not signed by --ca-file's CA",
    ),
    ("self-signed certificate", "unknown CA: the server's certificate is not signed by --ca-file's CA"),
    ("mismatch", "wrong name: the server's certificate is not for this host"),
    ("certificate has expired", "the server's certificate has expired"),
    ("CERTIFICATE_REQUIRED", "the server wants a client certificate (--cert-file, --key-file)"),
    ("UNKNOWN_CA", "the server refused this client certificate (not signed by its client CA)"),
    ("BAD_CERTIFICATE", "the server refused this client certificate"),
    ("CERTIFICATE_EXPIRED", "the server refused this client certificate: it has expired"),
    ("WRONG_VERSION_NUMBER", "the server does not speak TLS there (an http:// server?)"),
)


def why_failed(url: str, exc: httpx.TransportError) -> str:
    """One line: what went wrong reaching ``url`` (a certificate problem named as such)."""
    chain: list[BaseException] = []
    seen = exc.__cause__ or exc.__context__
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join([str(exc), *(str(getattr(e, "verify_message", "") or e) for e in chain)])
    for needle, meaning in _TLS_WHY:
        if needle.lower() in text.lower():
            return f"{url}: TLS: {meaning}"
    if isinstance(exc, httpx.RemoteProtocolError):
        if url.startswith("https:"):
            return f"{url}: the server closed the connection (does it want a client certificate? --cert-file)"
        return f"{url}: the server closed the connection (does it speak https? then say https://)"
    return f"{url}: {str(exc) or type(exc).__name__}"  # a timeout says nothing of itself


def once_each(errors: list[str]) -> str:
    """The errors, each once, with how many times it came."""
    counted: dict[str, int] = {}
    for e in errors:
        counted[e] = counted.get(e, 0) + 1
    return "; ".join(e if n == 1 else f"{e} ({n} tries)" for e, n in counted.items())
