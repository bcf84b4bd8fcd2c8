"""A server's TLS certificate, reloaded when its files change: for gRPC servers
(``ReloadingCredentials``) and HTTPS listeners (``ReloadingContext``: the injector's
webhook, the review console, the feedback service's HTTP endpoint).

cert-manager renews a service's certificate into its Secret, and the kubelet swaps
the mounted files (atomically, by symlink). gRPC asks ``ReloadingCredentials.fetch``
at every new TLS handshake; it stats the certificate, key and client CA files (cheap)
and reads them again only when one of them changed, so the next connection gets the
renewed certificate and connections already open keep theirs. An HTTPS listener's
handshakes move to ``ReloadingContext.context()``, which checks the files at most
once a second. A set that fails to load (caught half-written, a key that does not
match the certificate, a CA file with no certificate) is logged as
``tls.reload_failed`` and the previous set stays in use: a renewal never breaks the
server. A set taken is logged as ``tls.reloaded``."""

from __future__ import annotations

import datetime
import os
import ssl
import threading
import time
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sidecar.errors import ConfigError

log = structlog.get_logger("hitl.tls")

Stamp = tuple[tuple[int, int, int], ...]
CHECK_SECONDS = 1.0  # how often an HTTPS listener looks at its files


def stamp(*paths: Path) -> Stamp:
    """What changes when any of paths is replaced or rewritten: each file's inode,
    modification time and size (zeros for one that cannot be read)."""
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)  # follows the kubelet's ..data symlink
        except OSError:
            stamps.append((0, 0, 0))
        else:
            stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(stamps)


class ReloadingCredentials:
    """A server's certificate and key (and, for mTLS, the CA its clients' certificates
    must chain to), read again when their files change."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._files = (cert, key, client_ca) if client_ca else (cert, key)
        self._lock = threading.Lock()
        self._stamp = stamp(*self._files)
        self._initial, _ = self._load()  # at start-up a ConfigError stops the server

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that take the files' newest contents at each handshake;
        client certificates are required when a client CA is configured."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,  # type: ignore[arg-type]  # grpc-stubs omit None ("unchanged")
            require_client_authentication=self.client_ca is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The files' new contents when they changed and load; None (keep serving what
        is served) when they did not change or do not load."""
        with self._lock:
            now = stamp(*self._files)
            if now == self._stamp:
                return None
            self._stamp = now  # a failed set is not read again until it changes
            try:
                configuration, not_after = self._load()
            except ConfigError as exc:
                log.error("tls.reload_failed", cert=str(self.cert), error=str(exc))
                return None
            log.info("tls.reloaded", cert=str(self.cert), not_after=not_after.isoformat())
            return configuration

    def _load(self) -> tuple[grpc.ServerCertificateConfiguration, datetime.datetime]:
        """The files as gRPC takes them, and the certificate's expiry; a ConfigError
        naming the file when one cannot be read or is not what it should be."""
        cert, key = _read(self.cert), _read(self.key)
        leaf = _certificates(cert, self.cert)[0]
        if not _matches(leaf, _private_key(key, self.key)):
            raise ConfigError(f"TLS key {self.key} does not match the certificate {self.cert}")
        client_ca = None
        if self.client_ca is not None:
            client_ca = _read(self.client_ca)
            _certificates(client_ca, self.client_ca)
        configuration = grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=client_ca
        )
        return configuration, leaf.not_valid_after_utc


class ReloadingContext:
    """An SSLContext for serving HTTPS, rebuilt when the certificate or key file
    changes. The ASGI server takes one SSLContext for its listener
    (``serving_context``); its server-name callback, which OpenSSL runs early in every
    handshake (with or without SNI), moves the connection to the current context
    before a certificate is chosen."""

    def __init__(self, cert: Path, key: Path, check_seconds: float = CHECK_SECONDS) -> None:
        self.cert = cert
        self.key = key
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = stamp(cert, key)
        try:
            self._context = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS certificate {cert} and key {key}: {exc}"
            ) from exc

    def context(self) -> ssl.SSLContext:
        """The current context; checks the files at most every check_seconds."""
        now = time.monotonic()
        if now - self._checked < self._check_seconds:
            return self._context
        with self._lock:
            self._checked = now
            current = stamp(self.cert, self.key)
            if current != self._stamp:
                try:
                    self._context = self._load()
                except (OSError, ssl.SSLError) as exc:
                    log.error("tls.reload_failed", cert=str(self.cert), error=str(exc))
                else:
                    self._stamp = current
                    log.info("tls.reloaded", cert=str(self.cert))
        return self._context

    def serving_context(self) -> ssl.SSLContext:
        """The listener's context: each handshake continues on ``context()``."""
        listener = self._load()

        def current(
            connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _: object
        ) -> None:
            connection.context = self.context()

        listener.sni_callback = current
        return listener

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(self.cert, self.key)
        return context


def https_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """An HTTPS listener's context with the service's certificate, reloaded when it
    changes; None (plain HTTP) when no certificate is configured."""
    if cert is None or key is None:
        return None
    return ReloadingContext(cert, key).serving_context()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc


def _certificates(pem: bytes, path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"TLS file {path} holds no PEM certificate: {exc}") from exc


def _private_key(pem: bytes, path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"TLS file {path} holds no usable private key: {exc}") from exc


def _matches(leaf: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether key is the certificate's (gRPC would otherwise fail every handshake)."""
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return leaf.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
