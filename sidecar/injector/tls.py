"""The webhook's serving certificate, reloaded when its files change.

cert-manager renews the certificate into the Secret, and the kubelet swaps the
mounted files (atomically, by symlink); the next connection after that gets a
context with the new pair. A pair that fails to load (caught half-written, or a
key that does not match) is logged and the previous context stays in use.

The ASGI server takes one SSLContext for its listener (``serving_context``); its
server-name callback, which OpenSSL runs early in every handshake (with or without
SNI), moves the connection to the current context before a certificate is chosen."""

from __future__ import annotations

import os
import ssl
import threading
import time
from pathlib import Path

import structlog

from sidecar.errors import ConfigError

log = structlog.get_logger("hitl.injector")

CHECK_SECONDS = 1.0


class ReloadingContext:
    """An SSLContext for serving, rebuilt when the certificate or key file changes."""

    def __init__(self, cert: Path, key: Path, check_seconds: float = CHECK_SECONDS) -> None:
        self.cert = cert
        self.key = key
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._stat()
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
            stamp = self._stat()
            if stamp != self._stamp:
                try:
                    self._context = self._load()
                except (OSError, ssl.SSLError) as exc:
                    log.error("injector.tls_reload_failed", cert=str(self.cert), error=str(exc))
                else:
                    self._stamp = stamp
                    log.info("injector.tls_reloaded", cert=str(self.cert))
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

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in (self.cert, self.key):
            try:
                st = os.stat(path)  # follows the kubelet's ..data symlink
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)
