"""Assemble and run a review queue process: store, queue, gRPC server with health and
reflection, the overdue sweep, metrics; graceful shutdown on SIGTERM and SIGINT.

Shutdown order: health turns NOT_SERVING, the server drains in-flight calls for the
grace period, the sweep stops, then the store and metric exporters are closed."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.clock import Clock, SystemClock
from sidecar.review.config import ReviewConfig
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.outbox import FeedbackOutbox
from sidecar.review.queue import ReviewQueue
from sidecar.review.server import ReviewQueueServicer
from sidecar.review.store import ReviewStore, open_store
from sidecar.serving import ThreadedServer, serve_until_signalled, threaded_server
from sidecar.settings import credentials_of, env_of
from sidecar.supervision import Periodic
from sidecar.telemetry.metrics import observe_tasks, service_meters

log = structlog.get_logger("hitl.review")

REVIEW_SERVICE = rpb.DESCRIPTOR.services_by_name["ReviewQueue"].full_name
INSTRUMENTATION = "hitl.review"
OUTBOX_SECONDS = 1.0  # how often resolutions are sent to the feedback service


@dataclass
class ReviewServer:
    """A review queue's running parts (tests build one in-process)."""

    config: ReviewConfig
    queue: ReviewQueue
    grpc: ThreadedServer
    meters: MeterProvider
    tasks: list[Periodic]  # the overdue sweep; with a feedback service, the outbox
    outbox: FeedbackOutbox | None = None

    @property
    def address(self) -> str:
        return self.grpc.address

    def start(self) -> None:
        self.grpc.start()
        for task in self.tasks:
            task.start()
        log.info(
            "review.listening",
            address=self.address,
            sla=self.queue.sla.describe(),
            sweep_seconds=self.config.sweep_seconds,
            feedback=self.config.feedback,
        )

    def stop(self, grace: float | None = None) -> None:
        log.info("review.stopping", grace_seconds=self.config.shutdown_grace_seconds)
        self.grpc.stop(self.config.shutdown_grace_seconds if grace is None else grace)
        for task in self.tasks:
            task.stop()
        if self.outbox is not None:
            self.outbox.close()
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
    outbox = None
    if config.feedback:
        credentials = credentials_of(config, "feedback")
        outbox = FeedbackOutbox(queue.store, clock, config.feedback, credentials)
        tasks.append(Periodic("review-outbox", OUTBOX_SECONDS, outbox.send))
    observe_tasks(meters.get_meter(INSTRUMENTATION), lambda: [task.state for task in tasks])
    return ReviewServer(config, queue, server, meters, tasks, outbox)


def serve(config: ReviewConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
