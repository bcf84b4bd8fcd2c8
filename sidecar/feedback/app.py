"""Assemble and run a feedback service process: store, feedback log, gRPC server with
health and reflection, the dead-letter sweep, metrics; graceful shutdown on SIGTERM
and SIGINT.

Shutdown order: health turns NOT_SERVING, the server drains in-flight calls for the
grace period, the sweep stops, then the store and the span and metric exporters are
closed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.clock import Clock, SystemClock
from sidecar.feedback.access import check_method
from sidecar.feedback.config import FeedbackConfig
from sidecar.feedback.ingest import FeedbackLog
from sidecar.feedback.jetstream import JetStreamConsumer
from sidecar.feedback.limits import RateLimits
from sidecar.feedback.metrics import FeedbackMetrics
from sidecar.feedback.server import FeedbackServicer
from sidecar.feedback.store import FeedbackStore, open_store
from sidecar.feedback.trigger import ModelUpdates, jetstream, webhook
from sidecar.feedback.validation import MAX_BATCH
from sidecar.gate import Gate
from sidecar.serving import ThreadedServer, serve_until_signalled, threaded_server
from sidecar.settings import env_of
from sidecar.supervision import Periodic
from sidecar.telemetry.call_spans import CallSpans
from sidecar.telemetry.metrics import observe_tasks, service_meters
from sidecar.tls_reload import https_context

if TYPE_CHECKING:
    from sidecar.webserver import WebServer

log = structlog.get_logger("hitl.feedback")

FEEDBACK_SERVICE = fpb.DESCRIPTOR.services_by_name["Feedback"].full_name


@dataclass
class FeedbackServer:
    """A feedback service's running parts (tests build one in-process)."""

    config: FeedbackConfig
    feedback: FeedbackLog
    grpc: ThreadedServer
    meters: MeterProvider
    spans: CallSpans
    sweeper: Periodic
    http: WebServer | None = None  # the same service over HTTP (HITL_FEEDBACK_HTTP_LISTEN)
    jetstream: JetStreamConsumer | None = None  # HITL_FEEDBACK_NATS
    updates: Periodic | None = None  # model-update triggers, when configured

    @property
    def address(self) -> str:
        return self.grpc.address

    def start(self) -> None:
        self.grpc.start()
        if self.http is not None:
            self.http.start("feedback-http")
        self.sweeper.start()
        if self.jetstream is not None:
            self.jetstream.start()
        if self.updates is not None:
            self.updates.start()
        log.info(
            "feedback.listening",
            address=self.address,
            health_address=self.grpc.health_address,
            http_address=self.http.address if self.http else "",
            join_window=self.config.join_window,
        )

    def stop(self, grace: float | None = None) -> None:
        log.info("feedback.stopping", grace_seconds=self.config.shutdown_grace_seconds)
        self.grpc.stop(self.config.shutdown_grace_seconds if grace is None else grace)
        if self.http is not None:
            self.http.stop()
        if self.jetstream is not None:
            self.jetstream.stop()
        if self.updates is not None:
            self.updates.stop()
        self.sweeper.stop()
        self.feedback.store.close()
        self.spans.shutdown()
        self.meters.shutdown()
        log.info("feedback.stopped")


def build(
    config: FeedbackConfig,
    *,
    clock: Clock | None = None,
    store: FeedbackStore | None = None,
    metric_readers: list[MetricReader] | None = None,
    span_processors: list[SpanProcessor] | None = None,
) -> FeedbackServer:
    """Wire a feedback service from config; keyword arguments replace the real adapters."""
    metrics_var = env_of(FeedbackConfig, "metrics_addr")
    resource, meters = service_meters(
        "hitl-feedback", config.metrics_addr, metrics_var, metric_readers or ()
    )
    metrics = FeedbackMetrics(meters.get_meter("hitl.feedback"))
    service = {"rpc.service": FEEDBACK_SERVICE}
    spans = CallSpans(resource, "hitl.feedback", service, span_processors or ())
    clock = clock or SystemClock()
    limits = None
    if config.rate_limit:
        burst = max(2 * config.rate_limit, MAX_BATCH)
        limits = RateLimits(config.rate_limit, burst, clock)
    feedback = FeedbackLog(
        store or open_store(config.db),
        clock,
        metrics,
        config.join_window,
        limits,
        config.monitor_window,
    )
    gate = Gate("feedback", feedback.store, check_method, metrics.calls)
    server = threaded_server(
        config,
        FeedbackConfig,
        FEEDBACK_SERVICE,
        fpb_grpc.add_FeedbackServicer_to_server,
        FeedbackServicer(feedback, gate, spans),
    )
    sweeper = Periodic("feedback-sweep", config.sweep_seconds, feedback.maintain)
    http = _http(config, feedback, gate, spans) if config.http_listen else None
    jetstream = None
    if config.nats:
        deployments = [d.strip() for d in config.nats_deployments.split(",") if d.strip()]
        servers = config.nats.split(",")
        jetstream = JetStreamConsumer(feedback, servers, deployments, config.nats_access())
    updates = _updates(config, feedback.store, clock)
    tasks = [task for task in (sweeper, updates, jetstream) if task is not None]
    observe_tasks(meters.get_meter("hitl.feedback"), lambda: [task.state for task in tasks])
    return FeedbackServer(
        config, feedback, server, meters, spans, sweeper, http, jetstream, updates
    )


def _updates(config: FeedbackConfig, store: FeedbackStore, clock: Clock) -> Periodic | None:
    """The model-update check, when a volume or an age can trigger and something can
    be told (a webhook, NATS)."""
    destinations = []
    if config.trigger_webhook:
        key = config.trigger_webhook_key_file
        destinations.append(webhook(config.trigger_webhook, key.read_bytes() if key else None))
    if config.nats:
        destinations.append(jetstream(config.nats.split(","), config.nats_access()))
    if not destinations or not (config.trigger_rows or config.trigger_age):
        return None
    updates = ModelUpdates(
        store, clock, config.datasets, config.trigger_rows, config.trigger_age, destinations
    )
    return Periodic("feedback-model-updates", config.sweep_seconds, updates.check)


def _http(config: FeedbackConfig, feedback: FeedbackLog, gate: Gate, spans: CallSpans) -> WebServer:
    """The HTTP endpoint, over TLS with the gRPC server's certificate when it has one."""
    from sidecar.feedback.http import http_application
    from sidecar.webserver import web_server

    tls = https_context(config.tls_cert, config.tls_key)
    var = env_of(FeedbackConfig, "http_listen")
    return web_server(http_application(feedback, gate, spans), config.http_listen, var, tls=tls)


def serve(config: FeedbackConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
