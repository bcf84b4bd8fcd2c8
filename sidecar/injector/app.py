"""Assemble and run the injector: certificate, metrics, the webhook on uvicorn over
TLS; stop on SIGTERM.

Shutdown order: /readyz turns 503 and the server keeps answering for the drain
period (the endpoints controller takes the pod out of the Service meanwhile), then
it stops accepting, finishes what it is answering, and the meter provider is
flushed. uvicorn runs on a thread of its own, so the signals stay with this
module's main thread."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import structlog
import uvicorn
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.injector.config import ENV_INJECTOR_LISTEN, ENV_INJECTOR_METRICS_ADDR, InjectorConfig
from sidecar.injector.metrics import InjectorMetrics
from sidecar.injector.server import Readiness, webhook
from sidecar.injector.tls import ReloadingContext
from sidecar.serving import serve_until_signalled
from sidecar.settings import split_host_port
from sidecar.telemetry.metrics import service_meters
from sidecar.telemetry.tracing import INSTRUMENTATION

log = structlog.get_logger("hitl.injector")
STOP_SECONDS = 10.0  # how long stop waits for the server's thread after the drain


@dataclass
class Injector:
    config: InjectorConfig
    server: uvicorn.Server
    listener: socket.socket
    readiness: Readiness
    meters: MeterProvider
    address: str
    _thread: threading.Thread | None = field(default=None)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, name="injector-http"
        )
        self._thread.start()
        self.readiness.ready = True
        log.info("injector.serving", address=self.address, image=self.config.sidecar.image)

    def stop(self, drain_seconds: float | None = None) -> None:
        """Answer not ready for drain_seconds (default: the configured drain), then
        close."""
        if drain_seconds is None:
            drain_seconds = self.config.drain_seconds
        log.info("injector.stopping", drain_seconds=drain_seconds)
        self.readiness.ready = False
        if drain_seconds > 0:
            threading.Event().wait(drain_seconds)
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS)
        self.listener.close()
        self.meters.shutdown()


def build(config: InjectorConfig, metric_readers: list[MetricReader] | None = None) -> Injector:
    """Wire an injector from config (metric_readers: extra readers, for tests)."""
    _, meters = service_meters(
        "hitl-injector", config.metrics_addr, ENV_INJECTOR_METRICS_ADDR, metric_readers or ()
    )
    tls = ReloadingContext(config.tls_cert, config.tls_key)
    readiness = Readiness()
    app = webhook(config.sidecar, InjectorMetrics(meters.get_meter(INSTRUMENTATION)), readiness)
    server_config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,  # every review is logged once, by the application
        timeout_keep_alive=int(config.idle_timeout_seconds),
        timeout_graceful_shutdown=int(STOP_SECONDS),
    )
    server_config.load()
    server_config.ssl = tls.serving_context()
    listener = _bind(config.listen)
    host = config.listen.rpartition(":")[0]
    return Injector(
        config,
        uvicorn.Server(server_config),
        listener,
        readiness,
        meters,
        f"{host}:{listener.getsockname()[1]}",
    )


def _bind(listen: str) -> socket.socket:
    """The listening socket, bound now so the port (0 picks one) is known at once."""
    host, port = split_host_port(listen, ENV_INJECTOR_LISTEN)
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host.strip("[]"), port))
    listener.listen(128)
    return listener


def serve(config: InjectorConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
