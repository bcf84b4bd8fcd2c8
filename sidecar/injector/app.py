"""Assemble and run the injector: certificate, metrics, the webhook on uvicorn over
TLS; stop on SIGTERM.

Shutdown order: /readyz turns 503 and the server keeps answering for the drain
period (the endpoints controller takes the pod out of the Service meanwhile), then
it stops accepting, finishes what it is answering, and the meter provider is
flushed. uvicorn runs on a thread of its own, so the signals stay with this
module's main thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.injector.config import ENV_INJECTOR_LISTEN, ENV_INJECTOR_METRICS_ADDR, InjectorConfig
from sidecar.injector.metrics import InjectorMetrics
from sidecar.injector.server import Readiness, webhook
from sidecar.serving import serve_until_signalled
from sidecar.telemetry.metrics import service_meters
from sidecar.telemetry.tracing import INSTRUMENTATION
from sidecar.tls_reload import ReloadingContext
from sidecar.webserver import WebServer, web_server

log = structlog.get_logger("hitl.injector")
STOP_SECONDS = 10.0  # how long stop waits for the server's thread after the drain


@dataclass
class Injector:
    config: InjectorConfig
    web: WebServer
    readiness: Readiness
    meters: MeterProvider

    @property
    def address(self) -> str:
        return self.web.address

    def start(self) -> None:
        self.web.start("injector-http")
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
        self.web.stop()
        self.meters.shutdown()


def build(config: InjectorConfig, metric_readers: list[MetricReader] | None = None) -> Injector:
    """Wire an injector from config (metric_readers: extra readers, for tests)."""
    _, meters = service_meters(
        "hitl-injector", config.metrics_addr, ENV_INJECTOR_METRICS_ADDR, metric_readers or ()
    )
    tls = ReloadingContext(config.tls_cert, config.tls_key)
    readiness = Readiness()
    app = webhook(config.sidecar, InjectorMetrics(meters.get_meter(INSTRUMENTATION)), readiness)
    web = web_server(
        app,
        config.listen,
        ENV_INJECTOR_LISTEN,
        tls=tls.serving_context(),
        keep_alive_seconds=config.idle_timeout_seconds,
        stop_seconds=STOP_SECONDS,
    )
    return Injector(config, web, readiness, meters)


def serve(config: InjectorConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
