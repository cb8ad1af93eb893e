"""CAs and certificates made with the real `openssl` command, as an operator makes them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


@dataclass(frozen=True)
class CA:
    """A CA in ``base/<name>-ca.{pem,key}`` that signs leaf certificates."""

    base: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.base / f"{self.name}-ca.pem"

    @property
    def key(self) -> Path:
        return self.base / f"{self.name}-ca.key"

    @classmethod
    def make(cls, base: Path, name: str = "test") -> CA:
        ca = cls(base, name)
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            "-subj", f"/O=metafs test/CN={name} CA",
            "-keyout", str(ca.key), "-out", str(ca.cert), cwd=base,
        )  # fmt: skip
        return ca

    def issue(
        self, name: str, san: str = "", days: int = 30, subject: str = "/O=metafs", usage: str = ""
    ) -> tuple[Path, Path]:
        """A leaf certificate and its key: a server's with ``san``
        (``IP:127.0.0.1,DNS:localhost``), a client's without (no CN: etcd's gateway
        refuses one with a CN when users are on). ``usage``: the extended key usage
        (etcd's server certificate is also its gateway's client one: both)."""
        key, csr, cert = (self.base / f"{name}.{x}" for x in ("key", "csr", "pem"))
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            str(key),
            "-out",
            str(csr),
            cwd=self.base,
        )
        ext = self.base / f"{name}.ext"
        usage = usage or ("serverAuth" if san else "clientAuth")
        ext.write_text(f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", str(days), "-extfile", str(ext), "-out", str(cert), cwd=self.base,
        )  # fmt: skip
        return cert, key


LOCAL = "IP:127.0.0.1,DNS:localhost"
