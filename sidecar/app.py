"""Assemble and run a sidecar process: policy source, Router, gRPC server with health
and reflection, telemetry; graceful shutdown on SIGTERM and SIGINT.

With HITL_HEALTH_LISTEN a second gRPC server carries only health (and reflection),
so probes from outside the pod reach health while the Router stays pod-local. Both
servers share one HealthServicer, so the health listener says exactly what the
Router's address says, and it is never a way into the Router.

Shutdown order: health turns NOT_SERVING (so probes and load balancers stop sending),
the server drains in-flight calls (the health listener keeps answering NOT_SERVING
meanwhile, then closes), the forwarder flushes what it can, all within the grace
period; then the spools, audit log and telemetry exporters are flushed and closed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog

# grpc_health.v1.health re-exports this module as ``aio`` in a way mypy cannot follow.
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc
from sidecar.clock import Clock, SystemClock
from sidecar.config import (
    ENV_HEALTH_LISTEN,
    ENV_LISTEN,
    ENV_METRICS_ADDR,
    ENV_REGISTRY,
    ENV_REGISTRY_CA,
    ENV_REGISTRY_CERT,
    ENV_REGISTRY_KEY,
    ENV_REGISTRY_PUBLIC_KEY,
    SidecarConfig,
    segment_for,
)
from sidecar.errors import ConfigError
from sidecar.escalation.deadletter import DeadLetters
from sidecar.escalation.decisions import DECISIONS, DecisionStream
from sidecar.escalation.forwarder import ESCALATIONS, Forwarder, ForwarderSettings, Stream
from sidecar.escalation.messages import LabelsOf
from sidecar.escalation.recorder import SpoolRecorder
from sidecar.escalation.sinks import Sink, open_sink
from sidecar.escalation.sinks.feedback import FeedbackSink, TeeSink
from sidecar.escalation.spool import Spool
from sidecar.policy.file_source import FilePolicySource
from sidecar.policy.last_known_good import LastKnownGood
from sidecar.policy.registry_source import RegistryConnection, RegistryPolicySource, WatchSettings
from sidecar.policy.signing import load_verifier
from sidecar.policy.snapshot import Snapshot, SnapshotHolder
from sidecar.policy.source import PolicySource
from sidecar.router import Router
from sidecar.server import RouterServicer, read_batch
from sidecar.serving import (
    add_servicer,
    async_stop_event,
    bind,
    enable_reflection,
    health_only_server,
    write_port_file,
)
from sidecar.settings import read_file
from sidecar.supervision import Supervisor, TaskState
from sidecar.telemetry.audit import FLUSH_SECONDS, AuditLog, JsonLinesAudit
from sidecar.telemetry.metrics import (
    RouterMetrics,
    observe_audit,
    observe_decisions,
    observe_escalations,
    observe_policy_source,
    observe_tasks,
    service_meters,
)
from sidecar.telemetry.tracing import INSTRUMENTATION, ServerSpans, server_spans

log = structlog.get_logger("hitl.sidecar")

ROUTER_SERVICE = pb.DESCRIPTOR.services_by_name["Router"].full_name
HEALTH_SERVICES = ("", ROUTER_SERVICE)
TASK_HEALTH = "hitl.task."  # + a background task's name: NOT_SERVING while it cannot run
# A health listener refuses to share its port (gRPC's default is SO_REUSEPORT), so a
# port already taken fails at start-up instead of splitting another server's calls.


@dataclass
class Delivery:
    """One spool's way out: its recorder, its forwarder (None without a sink), its
    dead letters, and the forwarder's task once started."""

    name: str
    recorder: SpoolRecorder
    dead: DeadLetters
    forwarder: Forwarder | None
    task: asyncio.Task[None] | None = None


@dataclass
class Sidecar:
    """A running sidecar's parts (tests build one in-process with fakes)."""

    config: SidecarConfig
    holder: SnapshotHolder
    router: Router
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    source: PolicySource
    deliveries: list[Delivery]  # the escalations', then the decision stream's
    audit: AuditLog
    spans: ServerSpans
    meters: MeterProvider
    address: str = ""
    health_server: grpc.aio.Server | None = None
    health_address: str = ""
    supervisor: Supervisor = field(default_factory=Supervisor)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.supervisor.on_change = self._on_task

    async def start(self) -> None:
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.holder.subscribe(self._on_snapshot)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        self._supervise("policy-source", self.source.run)
        self._supervise("audit-flush", self._flush_audit)
        for delivery in self.deliveries:
            if delivery.forwarder is not None:
                delivery.task = self._supervise(delivery.name, delivery.forwarder.run)
        if self.deliveries[0].forwarder is None:
            log.warning(
                "sidecar.no_sink", detail="escalations stay in the spool until a sink is set"
            )
        log.info(
            "sidecar.listening",
            address=self.address,
            health_address=self.health_address,
            policy=str(self.config.policy or ""),
            registry=self.config.registry,
        )

    async def stop(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_grace_seconds
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.shutdown_grace_seconds)
        if self.health_server is not None:
            # Health calls are instant; only a Watch stream can be cut short here.
            await self.health_server.stop(0)
        for delivery in self.deliveries:
            if delivery.forwarder is not None and delivery.task is not None:
                self._tasks.discard(delivery.task)
                grace = max(0.0, deadline - time.monotonic())
                await delivery.forwarder.stop(delivery.task, grace)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for delivery in self.deliveries:
            delivery.recorder.close()
            delivery.dead.close()
        self.audit.close()
        self.spans.shutdown()
        self.meters.shutdown()
        log.info("sidecar.stopped")

    async def _flush_audit(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await asyncio.to_thread(self.audit.flush)

    def _on_snapshot(self, _snapshot: Snapshot) -> None:
        for service in HEALTH_SERVICES:
            self._spawn(self.health.set(service, health_pb2.HealthCheckResponse.SERVING))

    def _supervise(self, name: str, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """A background task that is restarted after an unexpected error; meanwhile
        health reports hitl.task.<name> NOT_SERVING (the Router's own health is not
        touched: Route still answers and spools)."""
        self._spawn(self.health.set(TASK_HEALTH + name, health_pb2.HealthCheckResponse.SERVING))
        return self._spawn(self.supervisor.run(name, work))

    def _on_task(self, state: TaskState) -> None:
        status = health_pb2.HealthCheckResponse
        serving = status.SERVING if state.running else status.NOT_SERVING
        self._spawn(self.health.set(TASK_HEALTH + state.name, serving))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def build(
    config: SidecarConfig,
    *,
    clock: Clock | None = None,
    sink: Sink | None = None,
    audit: AuditLog | None = None,
    metric_readers: list[MetricReader] | None = None,
) -> Sidecar:
    """Wire a sidecar from config; keyword arguments replace the real adapters."""
    clock = clock or SystemClock()
    resource, meters = service_meters(
        "hitl-sidecar", config.metrics_addr, ENV_METRICS_ADDR, metric_readers or ()
    )
    spans = server_spans(resource)
    holder = SnapshotHolder(config.audit_key)
    metrics = RouterMetrics(meters.get_meter(INSTRUMENTATION), holder, clock.now)
    if sink is None and config.sink:
        sink = open_sink(
            config.sink,
            config.deployment,
            config.forward_timeout_seconds,
            config.credentials("review"),
            holder.labels,
            config.nats_access(),
        )
    feedback_sink = None
    if config.feedback:  # escalated decisions reach the feedback service with the rest
        feedback_sink = _feedback_sink(config, holder.labels)
        sink = feedback_sink if sink is None else TeeSink(sink, feedback_sink)
    escalations = _delivery(
        "forwarder",
        config,
        Spool(
            config.spool_dir, config.segment_bytes, config.spool_budget_bytes, config.spool_fsync
        ),
        config.dead_letter_dir,
        sink,
        ESCALATIONS,
    )
    deliveries = [escalations]
    decisions = None
    if config.feedback:
        budget = config.decision_spool_budget_bytes
        delivery = _delivery(
            "decision-forwarder",
            config,
            Spool(config.decision_spool_dir, segment_for(budget), budget, config.spool_fsync),
            config.decision_dead_letter_dir,
            _feedback_sink(config, holder.labels),
            DECISIONS,
        )
        decisions = DecisionStream(delivery.recorder, config.decision_sample)
        deliveries.append(delivery)
        assert delivery.forwarder is not None  # a feedback service is its sink
        observe_decisions(meters.get_meter(INSTRUMENTATION), decisions, delivery.forwarder)
    observe_escalations(
        meters.get_meter(INSTRUMENTATION),
        escalations.recorder.spool,
        escalations.dead.spool,
        escalations.forwarder,
        clock.now,
    )
    audit = audit or JsonLinesAudit(config.audit_path)
    observe_audit(meters.get_meter(INSTRUMENTATION), audit)
    supervisor = Supervisor()
    observe_tasks(meters.get_meter(INSTRUMENTATION), supervisor.tasks.values)
    router = Router(
        holder,
        escalations.recorder,
        audit,
        metrics,
        clock,
        config.replay_capacity,
        config.replay_ttl_seconds,
        decisions,
    )
    router.guards.export(meters.get_meter(INSTRUMENTATION))
    server = grpc.aio.server()
    add_servicer(
        pb_grpc.add_RouterServicer_to_server,
        RouterServicer(router, metrics, spans),
        server,
        {"RouteBatch": read_batch, "RouteStream": read_batch},
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, ROUTER_SERVICE)
    address = bind(server, config.listen, ENV_LISTEN)
    health_server, health_address = None, ""
    if config.health_listen:
        health_server, health_address = health_only_server(
            health, config.health_listen, ENV_HEALTH_LISTEN
        )
    source = policy_source(config, holder, clock)
    observe_policy_source(meters.get_meter(INSTRUMENTATION), source.stats)
    return Sidecar(
        config,
        holder,
        router,
        server,
        health,
        source,
        deliveries,
        audit,
        spans,
        meters,
        address,
        health_server,
        health_address,
        supervisor,
    )


def _delivery(
    name: str,
    config: SidecarConfig,
    spool: Spool,
    dead_letter_dir: Path,
    sink: Sink | None,
    stream: Stream,
) -> Delivery:
    """A spool's recorder, dead letters and (with a sink) forwarder."""
    if spool.truncated_bytes:
        log.warning("spool.torn_tail_cut", spool=str(spool.directory), bytes=spool.truncated_bytes)
    if spool.recovered_records:
        log.warning("spool.recovered", spool=str(spool.directory), records=spool.recovered_records)
    recorder = SpoolRecorder(spool)
    dead = DeadLetters(Spool(dead_letter_dir, fsync=True))
    forwarder = None
    if sink is not None:
        settings = ForwarderSettings(
            batch_size=config.forward_batch,
            timeout_seconds=config.forward_timeout_seconds,
            backoff_cap_seconds=config.forward_max_backoff_seconds,
            # An open circuit waits a third of the longest backoff (10 s by default).
            breaker_reset_seconds=config.forward_max_backoff_seconds / 3,
        )
        forwarder = Forwarder(spool, sink, dead, settings, recorder.written, stream=stream)
    return Delivery(name, recorder, dead, forwarder)


def _feedback_sink(config: SidecarConfig, labels_of: LabelsOf) -> Sink:
    """The feedback service's gRPC endpoint, or its JetStream stream (nats://...)."""
    if config.feedback.startswith(("nats://", "tls://")):
        from sidecar.escalation.sinks.nats import FeedbackNatsSink

        servers = config.feedback.split(",")
        return FeedbackNatsSink(
            servers,
            config.deployment,
            config.forward_timeout_seconds,
            labels_of,
            config.nats_access(),
        )
    credentials = config.credentials("feedback")
    return FeedbackSink(config.feedback, config.forward_timeout_seconds, credentials, labels_of)


def policy_source(
    config: SidecarConfig, holder: SnapshotHolder, clock: Clock | None = None
) -> PolicySource:
    """The policy file's watcher, or the registry's (config allows exactly one)."""
    if config.policy is not None:
        return FilePolicySource(config.policy, holder, config.policy_poll_seconds)
    # SidecarConfig.load requires the key with a registry; a hand-built config may not.
    if config.registry_public_key is None:
        raise ConfigError(f"{ENV_REGISTRY_PUBLIC_KEY} is required with {ENV_REGISTRY}")
    connection = RegistryConnection(
        config.registry,
        config.registry_token,
        read_file(config.registry_ca, ENV_REGISTRY_CA),
        read_file(config.registry_key, ENV_REGISTRY_KEY),
        read_file(config.registry_cert, ENV_REGISTRY_CERT),
    )
    verifier = load_verifier(config.registry_public_key)
    return RegistryPolicySource(
        connection,
        holder,
        LastKnownGood(config.policy_state_dir, verifier),
        verifier,
        WatchSettings(poll_seconds=config.registry_poll_seconds),
        clock=clock,
    )


async def serve(config: SidecarConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    sidecar = build(config)
    await sidecar.start()
    # Everything built so far (grpc, onnxruntime, the policy) lives as long as the
    # process; moving it out of the collector's view keeps full collections short,
    # where they would otherwise pause Route for milliseconds.
    gc.freeze()
    if config.port_file is not None:
        write_port_file(config.port_file, sidecar.address)
    await async_stop_event().wait()
    log.info("sidecar.stopping", grace_seconds=config.shutdown_grace_seconds)
    await sidecar.stop()
