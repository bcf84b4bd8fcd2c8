"""A throwaway certificate authority for TLS tests (``cryptography``'s x509 builder)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A serving certificate and key, and the PEM of the CA that signed them."""

    ca_pem: bytes
    cert: Path
    key: Path


class Authority:
    def __init__(self, directory: Path, name: str = "hitl test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self._cert = (
            _builder(subject, subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / "ca.pem"
        self.ca_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self.cert.write_bytes(self.ca_pem)

    def issue(self, common_name: str, *, server: bool = False) -> Issued:
        """A key and certificate for common_name, signed by this CA; a server
        certificate is valid for 127.0.0.1 and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = _builder(subject, self._name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(
            self.directory / f"{common_name}.pem", self.directory / f"{common_name}.key"
        )
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


def serving_pair(directory: Path, ca_name: str, common_name: str = "server") -> Pki:
    """A new CA and a serving certificate for localhost and 127.0.0.1 signed by it,
    written to directory/tls.crt and tls.key by rename (as the kubelet swaps a
    renewed Secret's files)."""
    ca = Authority(directory / f".{ca_name}", ca_name)
    issued = ca.issue(common_name, server=True)
    directory.mkdir(parents=True, exist_ok=True)
    issued.cert.replace(directory / "tls.crt")
    issued.key.replace(directory / "tls.key")
    return Pki(ca.ca_pem, directory / "tls.crt", directory / "tls.key")


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
