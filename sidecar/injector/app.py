"""Assemble and run the injector: certificate, metrics, HTTPS server; stop on SIGTERM.

Shutdown order: /readyz turns 503 and the server keeps answering for the drain
period (the endpoints controller takes the pod out of the Service meanwhile), then
it stops accepting, and the meter provider is flushed."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from sidecar.injector.config import ENV_INJECTOR_LISTEN, ENV_INJECTOR_METRICS_ADDR, InjectorConfig
from sidecar.injector.metrics import InjectorMetrics
from sidecar.injector.server import WebhookServer
from sidecar.injector.tls import ReloadingContext
from sidecar.serving import prometheus_reader, write_port_file
from sidecar.settings import split_host_port
from sidecar.telemetry.metrics import meter_provider
from sidecar.telemetry.tracing import INSTRUMENTATION

log = structlog.get_logger("hitl.injector")


@dataclass
class Injector:
    config: InjectorConfig
    server: WebhookServer
    meters: MeterProvider
    address: str
    _thread: threading.Thread | None = field(default=None)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="injector-accept", daemon=True
        )
        self._thread.start()
        self.server.ready.set()
        log.info("injector.serving", address=self.address, image=self.config.sidecar.image)

    def stop(self, drain_seconds: float = 0.0) -> None:
        self.server.ready.clear()
        if drain_seconds > 0:
            threading.Event().wait(drain_seconds)
        self.server.shutdown()
        self.server.server_close()
        self.meters.shutdown()


def build(config: InjectorConfig, metric_readers: list[MetricReader] | None = None) -> Injector:
    """Wire an injector from config (metric_readers: extra readers, for tests)."""
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "hitl-injector")}
    )
    readers = list(metric_readers or [])
    if config.metrics_addr:
        readers.append(prometheus_reader(config.metrics_addr, ENV_INJECTOR_METRICS_ADDR))
    meters = meter_provider(resource, readers)
    tls = ReloadingContext(config.tls_cert, config.tls_key)
    host, port = split_host_port(config.listen, ENV_INJECTOR_LISTEN)
    server = WebhookServer(
        host,
        port,
        tls,
        config.sidecar,
        InjectorMetrics(meters.get_meter(INSTRUMENTATION)),
        handshake_timeout=config.handshake_timeout_seconds,
        idle_timeout=config.idle_timeout_seconds,
    )
    address = f"{host}:{server.server_address[1]}"
    return Injector(config, server, meters, address)


def serve(config: InjectorConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    injector = build(config)
    injector.start()
    if config.port_file is not None:
        write_port_file(config.port_file, injector.address)
    stop.wait()
    log.info("injector.stopping", drain_seconds=config.drain_seconds)
    injector.stop(config.drain_seconds)
