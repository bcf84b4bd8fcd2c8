"""The webhook's HTTPS server: ``POST /mutate`` answers AdmissionReviews,
``GET /healthz`` and ``GET /readyz`` answer probes (readyz turns 503 while the
server drains on SIGTERM, so the Service stops sending before it closes).

The standard library's threading HTTP server, one thread per connection; the TLS
handshake runs on that thread, with a deadline, so a slow client never holds up
accepting the next one. Connections are kept alive (the API server reuses them)
until they sit idle for the configured time."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from sidecar.injector.admission import BadReview, Outcome, review
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.metrics import INVALID, InjectorMetrics
from sidecar.injector.tls import ReloadingContext

log = structlog.get_logger("hitl.injector")

MUTATE_PATH = "/mutate"
MAX_BODY_BYTES = 8 * 2**20  # the API server sends at most a few MiB per object


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up exit

    def __init__(
        self,
        host: str,
        port: int,
        tls: ReloadingContext,
        defaults: SidecarDefaults,
        metrics: InjectorMetrics,
        *,
        handshake_timeout: float,
        idle_timeout: float,
    ) -> None:
        bracketed = host.startswith("[") and host.endswith("]")
        self.address_family = socket.AF_INET6 if bracketed else socket.AF_INET
        self.tls = tls
        self.defaults = defaults
        self.metrics = metrics
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.ready = threading.Event()
        super().__init__((host.strip("[]"), port), WebhookHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.handshake_timeout)
        try:
            tls = self.tls.context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("injector.tls_handshake_failed", client=client_address[0], error=str(exc))
            return
        try:
            tls.settimeout(self.idle_timeout)
            WebhookHandler(tls, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


class WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WebhookServer

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok"})
        elif path == "/readyz":
            ready = self.server.ready.is_set()
            self._send(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                       {"status": "ready" if ready else "draining"})  # fmt: skip
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}"})

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        if path != MUTATE_PATH:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}"})
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self._invalid(f"Content-Length must be given and at most {MAX_BODY_BYTES}")
            return
        body = self.rfile.read(int(length))
        started = time.perf_counter()
        try:
            reviewed = review(body, self.server.defaults)
        except BadReview as exc:
            self._invalid(str(exc))
            return
        self.server.metrics.record(reviewed.outcome.value, _ms_since(started))
        if reviewed.outcome is Outcome.SKIPPED:
            log.debug("injector.skipped", pod=reviewed.pod, reason=reviewed.message)
        elif reviewed.outcome is Outcome.REJECTED:
            log.warning("injector.rejected", pod=reviewed.pod, reason=reviewed.message)
        else:
            log.info("injector.injected", pod=reviewed.pod)
        self._send(HTTPStatus.OK, reviewed.response)

    def _invalid(self, message: str) -> None:
        self.server.metrics.record(INVALID, 0.0)
        log.warning("injector.invalid_request", client=self.client_address[0], error=message)
        self._send(HTTPStatus.BAD_REQUEST, {"error": message})

    def _send(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines are not logged: every review is, once, by do_POST."""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
