"""Assemble and run a review queue process: store, queue, gRPC server with health and
reflection, the overdue sweep, metrics, and (``HITL_REVIEW_CONSOLE_LISTEN``) the
reviewers' web console on the same queue object; graceful shutdown on SIGTERM and
SIGINT.

Shutdown order: health turns NOT_SERVING, the server drains in-flight calls for the
grace period, the console finishes its requests, the sweep stops, then the store and
metric exporters are closed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.clock import Clock, SystemClock
from sidecar.errors import ConfigError
from sidecar.review.config import ReviewConfig
from sidecar.review.ground_truth import FeedbackLabels, GroundTruth
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.outbox import FeedbackOutbox
from sidecar.review.quality_window import refresh_gauges
from sidecar.review.queue import ReviewQueue
from sidecar.review.server import ReviewQueueServicer
from sidecar.review.store import ReviewStore, open_store
from sidecar.serving import ThreadedServer, serve_until_signalled, threaded_server
from sidecar.settings import credentials_of, env_of, read_file
from sidecar.supervision import Periodic
from sidecar.telemetry.metrics import observe_tasks, service_meters
from sidecar.tls_reload import https_context

if TYPE_CHECKING:
    from sidecar.webserver import WebServer

log = structlog.get_logger("hitl.review")

REVIEW_SERVICE = rpb.DESCRIPTOR.services_by_name["ReviewQueue"].full_name
INSTRUMENTATION = "hitl.review"
OUTBOX_SECONDS = 1.0  # how often resolutions are sent to the feedback service
MIN_KEY_BYTES = 32  # the console's session key


@dataclass
class ReviewServer:
    """A review queue's running parts (tests build one in-process)."""

    config: ReviewConfig
    queue: ReviewQueue
    grpc: ThreadedServer
    meters: MeterProvider
    tasks: list[Periodic]  # the overdue sweep, the outbox if any, the reviewer gauges
    outbox: FeedbackOutbox | None = None
    console: WebServer | None = None  # the reviewers' web console, when configured
    labels: FeedbackLabels | None = None  # the feedback service's ground truth, if any

    @property
    def address(self) -> str:
        return self.grpc.address

    def start(self) -> None:
        self.grpc.start()
        for task in self.tasks:
            task.start()
        if self.console is not None:
            self.console.start("review-console")
            log.info("review.console_listening", address=self.console.address)
        log.info(
            "review.listening",
            address=self.address,
            health_address=self.grpc.health_address,
            sla=self.queue.sla.describe(),
            sweep_seconds=self.config.sweep_seconds,
            feedback=self.config.feedback,
        )

    def stop(self, grace: float | None = None) -> None:
        log.info("review.stopping", grace_seconds=self.config.shutdown_grace_seconds)
        self.grpc.stop(self.config.shutdown_grace_seconds if grace is None else grace)
        if self.console is not None:
            self.console.stop()
        for task in self.tasks:
            task.stop()
        if self.outbox is not None:
            self.outbox.close()
        if self.labels is not None:
            self.labels.close()
        self.queue.store.close()
        self.meters.shutdown()
        log.info("review.stopped")


def build(
    config: ReviewConfig,
    *,
    clock: Clock | None = None,
    store: ReviewStore | None = None,
    metric_readers: list[MetricReader] | None = None,
) -> ReviewServer:
    """Wire a review queue from config; keyword arguments replace the real adapters."""
    clock = clock or SystemClock()
    _, meters = service_meters(
        "hitl-review",
        config.metrics_addr,
        env_of(ReviewConfig, "metrics_addr"),
        metric_readers or (),
    )
    metrics = ReviewMetrics(meters.get_meter(INSTRUMENTATION))
    queue = ReviewQueue(
        store or open_store(config.db),
        clock,
        config.sla,
        metrics,
        max_claims=config.max_claims,
        max_lease_seconds=config.max_lease_seconds,
        consensus=config.consensus,
    )
    server = threaded_server(
        config,
        ReviewConfig,
        REVIEW_SERVICE,
        rpb_grpc.add_ReviewQueueServicer_to_server,
        ReviewQueueServicer(queue, metrics),
    )
    # At once (so the item gauge starts right), then every sweep_seconds.
    tasks = [Periodic("review-sweep", config.sweep_seconds, queue.sweep)]
    outbox = labels = truth = None
    if config.feedback:
        credentials = credentials_of(config, "feedback")
        outbox = FeedbackOutbox(queue.store, clock, config.feedback, credentials)
        tasks.append(Periodic("review-outbox", OUTBOX_SECONDS, outbox.send))
        labels = FeedbackLabels(config.feedback, credentials)
        truth = GroundTruth(labels, clock)
    # The reviewer gauges and the ground truth they and the console compare with,
    # read at the sweep's pace: a task of its own, so a failure to read them never
    # holds up the overdue raises, and a page never waits on the feedback service.
    tasks.append(
        Periodic(
            "review-quality",
            config.sweep_seconds,
            lambda: refresh_gauges(queue, metrics, truth=truth),
        )
    )
    observe_tasks(meters.get_meter(INSTRUMENTATION), lambda: [task.state for task in tasks])
    console = _console(config, queue, metrics, truth) if config.console_listen else None
    return ReviewServer(config, queue, server, meters, tasks, outbox, console, labels)


def _console(
    config: ReviewConfig, queue: ReviewQueue, metrics: ReviewMetrics, truth: GroundTruth | None
) -> WebServer:
    """The web console on config.console_listen, over TLS with the gRPC server's
    certificate when it has one (its cookies then Secure)."""
    from sidecar.review.console.app import Console
    from sidecar.review.console.sessions import Sessions
    from sidecar.webserver import web_server

    tls = https_context(config.tls_cert, config.tls_key)
    sessions = Sessions(console_key(config), secure=tls is not None)
    app = Console(queue, config, sessions, metrics, truth=truth).application()
    var = env_of(ReviewConfig, "console_listen")
    # The trusted-header check needs the connecting peer, never a forwarded address.
    return web_server(app, config.console_listen, var, tls=tls, proxy_headers=False)


def console_key(config: ReviewConfig) -> bytes:
    """The key signing the console's sessions: the secret file's (32 bytes or more),
    or, without one, a random key for this process, with a warning (sessions then end
    with the process, and replicas do not share them)."""
    var = env_of(ReviewConfig, "console_secret_file")
    key = read_file(config.console_secret_file, var)
    if key is None:
        log.warning(
            "review.console_ephemeral_secret",
            detail=f"{var} is not set: sessions are signed with a random key for this process"
            " only, and end when it stops",
        )
        return secrets.token_bytes(32)
    key = key.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{var}: the key is {len(key)} bytes; at least {MIN_KEY_BYTES}")
    return key


def serve(config: ReviewConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
