"""Assemble and run the Label Studio bridge: its store, the bridge over Label
Studio's API, the webhook receiver (Starlette on ``webserver``), and three
supervised periodic tasks (``supervision.Periodic``): the poll (new tasks, missed
annotations), the SLA sweep, and, with HITL_LABELSTUDIO_FEEDBACK, the outbox of
resolutions to the feedback service. SIGTERM or SIGINT: the receiver finishes its
requests, the tasks stop, the store and exporters close."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.clock import Clock, SystemClock
from sidecar.errors import ConfigError
from sidecar.labelstudio.bridge import Bridge
from sidecar.labelstudio.config import LabelStudioConfig
from sidecar.labelstudio.metrics import BridgeMetrics
from sidecar.labelstudio.outbox import ResolutionOutbox
from sidecar.labelstudio.store import open_store
from sidecar.labelstudio.webhook import webhook_application
from sidecar.serving import serve_until_signalled
from sidecar.settings import credentials_of, env_of, read_file
from sidecar.supervision import Periodic
from sidecar.telemetry.metrics import observe_tasks, service_meters
from sidecar.webserver import WebServer, web_server

log = structlog.get_logger("hitl.labelstudio")

INSTRUMENTATION = "hitl.labelstudio"
OUTBOX_SECONDS = 1.0
MIN_SECRET_BYTES = 16


@dataclass
class BridgeServer:
    config: LabelStudioConfig
    bridge: Bridge
    web: WebServer
    meters: MeterProvider
    tasks: list[Periodic]
    outbox: ResolutionOutbox | None = None

    @property
    def address(self) -> str:
        return self.web.address

    def start(self) -> None:
        self.web.start("labelstudio-webhook")
        for task in self.tasks:
            task.start()
        log.info(
            "labelstudio.listening",
            address=self.address,
            labelstudio=self.config.url,
            sla=self.config.sla.describe(),
            feedback=self.config.feedback,
        )

    def stop(self, grace: float | None = None) -> None:
        self.web.stop()
        for task in self.tasks:
            task.stop()
        if self.outbox is not None:
            self.outbox.close()
        self.bridge.close()
        self.bridge.store.close()
        self.meters.shutdown()
        log.info("labelstudio.stopped")


def build(
    config: LabelStudioConfig,
    *,
    clock: Clock | None = None,
    metric_readers: list[MetricReader] | None = None,
) -> BridgeServer:
    clock = clock or SystemClock()
    secret = webhook_secret(config)
    _, meters = service_meters(
        "hitl-labelstudio",
        config.metrics_addr,
        env_of(LabelStudioConfig, "metrics_addr"),
        metric_readers or (),
    )
    metrics = BridgeMetrics(meters.get_meter(INSTRUMENTATION))
    store = open_store(config.db)
    bridge = Bridge(config, store, clock, metrics)
    tasks = [
        Periodic("labelstudio-poll", config.poll_seconds, bridge.poll),
        Periodic("labelstudio-sweep", config.sweep_seconds, bridge.sweep),
    ]
    outbox = None
    if config.feedback:
        outbox = ResolutionOutbox(store, clock, config.feedback, credentials_of(config, "feedback"))
        tasks.append(Periodic("labelstudio-outbox", OUTBOX_SECONDS, outbox.send))
    observe_tasks(meters.get_meter(INSTRUMENTATION), lambda: [task.state for task in tasks])
    app = webhook_application(bridge, secret, metrics)
    web = web_server(
        app,
        config.listen,
        env_of(LabelStudioConfig, "listen"),
        stop_seconds=config.shutdown_grace_seconds,
    )
    return BridgeServer(config, bridge, web, meters, tasks, outbox)


def webhook_secret(config: LabelStudioConfig) -> bytes:
    var = env_of(LabelStudioConfig, "webhook_secret_file")
    secret = (read_file(config.webhook_secret_file, var) or b"").strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{var}: the secret is {len(secret)} bytes; at least {MIN_SECRET_BYTES}")
    return secret


def serve(config: LabelStudioConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
