"""OpenTelemetry metrics of the Router, and the meter provider's readers.

Instruments are created once. Attribute values come from the policy (models,
domains, arms) or from enums, never from free request text, so cardinality stays
bounded: a domain the policy does not name is reported as ``default``."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable

import orjson
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sidecar.core.decision import REASON_NAMES, TIER_NAMES, Decision, is_degraded
from sidecar.escalation.decisions import DecisionStream
from sidecar.escalation.forwarder import Forwarder
from sidecar.escalation.spool import Spool
from sidecar.policy.snapshot import SnapshotHolder
from sidecar.policy.source import SourceStats
from sidecar.serving import prometheus_reader
from sidecar.supervision import TaskState
from sidecar.telemetry.audit import AuditLog

# Route latency buckets (ms): fine below the 5 ms budget, coarse above it.
LATENCY_BUCKETS_MS = (
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    25.0,
    100.0,
)


class RouterMetrics:
    """Counts are kept in plain dicts on the request path (one increment, no attribute
    processing) and reported through observable counters when a reader collects;
    only the latency histogram is recorded per call."""

    def __init__(self, meter: Meter, holder: SnapshotHolder, clock: Callable[[], float]) -> None:
        self.latency = meter.create_histogram(
            "hitl.route.duration",
            unit="ms",
            description="Time to answer one Route, RouteBatch or RouteStream batch on the server",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        self._decisions: Counter[tuple[str, ...]] = Counter()
        self._fallbacks: Counter[tuple[str, ...]] = Counter()
        self._invalid: Counter[tuple[str, ...]] = Counter()
        self._escalations: Counter[tuple[str, ...]] = Counter()
        self._outcomes: Counter[tuple[str, ...]] = Counter()
        self._unknown_domains: Counter[tuple[str, ...]] = Counter()
        for name, counts, keys, description in (
            ("hitl.route.decisions", self._decisions, ("model", "domain", "tier", "reason", "arm"),
             "Decisions by model, domain, tier, reason and arm"),
            ("hitl.route.fallbacks", self._fallbacks, ("model", "reason"),
             "Degraded decisions by model and fallback reason"),
            ("hitl.route.invalid_requests", self._invalid, ("field",),
             "Requests refused, by field"),
            ("hitl.escalations", self._escalations, ("model", "tier", "result"),
             "Escalations by model, tier and result (recorded or refused)"),
            ("hitl.outcomes", self._outcomes, ("model", "tier", "correct"),
             "Outcomes reported, by model, tier and correctness"),
            ("hitl.route.unknown_domains", self._unknown_domains, ("model", "domain"),
             "Requests naming a domain their model's policy does not, by model and domain"),
        ):  # fmt: skip
            meter.create_observable_counter(name, [_observe(counts, keys)], description=description)
        self._holder = holder
        self._clock = clock
        meter.create_observable_gauge(
            "hitl.policy.revision", [self._revision], description="Revision of the policy in force"
        )
        meter.create_observable_gauge(
            "hitl.policy.age",
            [self._age],
            unit="s",
            description="Seconds since the policy in force was issued",
        )
        meter.create_observable_gauge(
            "hitl.calibration.info",
            [self._calibration],
            description="1 for each model and the calibration version it runs",
        )

    def record(self, model: str, domain: str, decision: Decision) -> None:
        reason = decision.reason.name
        self._decisions[model, domain, decision.tier.name, reason, decision.experiment_arm] += 1
        if decision.degraded:
            self._fallbacks[model, reason] += 1

    def record_columns(
        self,
        model: str,
        domains: Iterable[str],
        tiers: Iterable[int],
        reasons: Iterable[int],
        arms: Iterable[str],
    ) -> None:
        """``record`` for a batch's decisions, given as columns (tiers and reasons as ints)."""
        counts = Counter(zip(domains, tiers, reasons, arms, strict=True))
        for (domain, tier, reason, arm), count in counts.items():
            name = REASON_NAMES[reason]
            self._decisions[model, domain, TIER_NAMES[tier], name, arm] += count
            if is_degraded(reason):
                self._fallbacks[model, name] += count

    def unknown_domain(self, model: str, domain: str) -> None:
        self._unknown_domains[model, domain] += 1

    def invalid(self, field: str) -> None:
        self._invalid[(field,)] += 1

    def escalation(self, model: str, tier: str, result: str) -> None:
        self._escalations[model, tier, result] += 1

    def outcome(self, model: str, tier: str, correct: bool) -> None:
        self._outcomes[model, tier, str(correct).lower()] += 1

    def _revision(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._holder.current
        return [Observation(snapshot.policy.revision if snapshot else 0)]

    def _age(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._holder.current
        if snapshot is None or snapshot.policy.issued_at is None:
            return []
        return [Observation(self._clock() - snapshot.policy.issued_at)]

    def _calibration(self, _options: CallbackOptions) -> Iterable[Observation]:
        snapshot = self._holder.current
        if snapshot is None:
            return []
        return [
            Observation(1, {"model": name, "version": calibrator.metadata.version})
            for name, calibrator in snapshot.calibrators.items()
        ]


def observe_escalations(
    meter: Meter,
    spool: Spool,
    dead: Spool,
    forwarder: Forwarder | None,
    clock: Callable[[], float],
) -> None:
    """Spool depth, bytes and oldest unacknowledged age, and the undelivered records an
    earlier process left behind; the forwarder's sent, retried and dead-lettered
    counts and circuit state (0 closed, 1 half-open, 2 open)."""

    def gauge(name: str, unit: str, description: str, value: Callable[[], float]) -> None:
        meter.create_observable_gauge(
            name, [lambda _o: [Observation(value())]], unit=unit, description=description
        )

    def oldest_age() -> float:
        try:  # on the exporter's thread: the forwarder may delete the segment meanwhile
            first = next(spool.read(spool.acked_offset, 1), None)
        except FileNotFoundError:
            return 0.0
        return max(0.0, clock() - orjson.loads(first[1])["created_at"]) if first else 0.0

    gauge(
        "hitl.spool.records",
        "",
        "Escalations in the spool not yet delivered",
        lambda: spool.stats().records,
    )
    gauge(
        "hitl.spool.bytes",
        "By",
        "Bytes of spool segments on disk (delivered records too, until a segment rolls)",
        lambda: spool.stats().bytes_on_disk,
    )
    gauge(
        "hitl.spool.pending_bytes",
        "By",
        "Bytes of the escalations that wait for delivery",
        lambda: spool.stats().pending_bytes,
    )
    gauge("hitl.spool.budget", "By", "The spool's disk budget", lambda: spool.budget_bytes)
    gauge("hitl.spool.oldest_age", "s", "Age of the oldest undelivered escalation", oldest_age)
    gauge("hitl.dead_letter.records", "", "Escalations a sink refused, awaiting replay",
          lambda: dead.stats().records)  # fmt: skip
    # A gauge, constant for the process's life, not a counter: a counter series that
    # is born at its value shows no increase() in Prometheus, so nothing could fire.
    gauge("hitl.spool.recovered_records", "",
          "Undelivered escalations an earlier process left in the spool, found when this "
          "one started (it delivers them)", lambda: spool.recovered_records)  # fmt: skip
    if forwarder is None:
        return
    attrs = {"sink": forwarder.sink.name}
    for name, read, description in (
        ("hitl.forwarder.sent", lambda: forwarder.sent, "Escalations delivered to the sink"),
        ("hitl.forwarder.retried", lambda: forwarder.retried,
         "Escalations sent again after a failed delivery"),
        ("hitl.forwarder.dead_lettered", lambda: forwarder.dead_lettered,
         "Escalations the sink refused for good"),
    ):  # fmt: skip
        meter.create_observable_counter(name, [_constant(read, attrs)], description=description)
    meter.create_observable_gauge(
        "hitl.forwarder.circuit",
        [_constant(lambda: forwarder.circuit.value, attrs)],
        description="Circuit breaker state: 0 closed, 1 half-open, 2 open",
    )


def observe_decisions(meter: Meter, stream: DecisionStream, forwarder: Forwarder) -> None:
    """The decision stream to the feedback service: records waiting, records the
    spool could not take, delivered and refused for good."""
    spool = stream.recorder.spool
    meter.create_observable_gauge(
        "hitl.decisions.records",
        [lambda _o: [Observation(spool.stats().records)]],
        description="Decision records and outcomes not yet delivered to the feedback service",
    )
    for name, read, description in (
        ("hitl.decisions.dropped", lambda: stream.dropped,
         "Sampled decision records the spool could not take (its budget was full)"),
        ("hitl.decisions.sent", lambda: forwarder.sent,
         "Decision records and outcomes delivered to the feedback service"),
        ("hitl.decisions.dead_lettered", lambda: forwarder.dead_lettered,
         "Decision records and outcomes the feedback service refused for good"),
    ):  # fmt: skip
        meter.create_observable_counter(name, [_constant(read, {})], description=description)


def observe_audit(meter: Meter, audit: AuditLog) -> None:
    """Flushes the audit file refused, records dropped while it did, and the bytes
    held in memory for it."""
    meter.create_observable_counter(
        "hitl.audit.write_failures",
        [lambda _options: [Observation(audit.failures)]],
        description="Audit log flushes the file refused (records are held and retried)",
    )
    meter.create_observable_counter(
        "hitl.audit.dropped",
        [lambda _options: [Observation(audit.dropped)]],
        description="Audit records dropped, held past the bound while the file refused writes",
    )
    meter.create_observable_gauge(
        "hitl.audit.pending",
        [lambda _options: [Observation(audit.pending_bytes())]],
        unit="By",
        description="Audit records in memory, not yet written",
    )


def observe_policy_source(meter: Meter, stats: SourceStats) -> None:
    """How often the policy source reopened its stream to the registry, and the
    policies it refused by reason (signature, schema, calibrator, sha256,
    stale_revision); revision and age are RouterMetrics' gauges."""
    meter.create_observable_counter(
        "hitl.policy.reconnects",
        [lambda _options: [Observation(stats.reconnects)]],
        description="Watch streams to the registry opened again after one failed or ended",
    )

    def rejected(_options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"reason": reason}) for reason, count in dict(stats.rejected).items()
        ]

    meter.create_observable_counter(
        "hitl.policy.rejected",
        [rejected],
        description="Policies refused (the one in force stays), by reason",
    )


def _constant(
    read: Callable[[], float], attrs: dict[str, str]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    return lambda _options: [Observation(read(), attrs)]


def _observe(
    counts: Counter[tuple[str, ...]], keys: tuple[str, ...]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        # dict() copies in one C call, so a collection on the exporter's thread never
        # sees the event loop resize the counter mid-iteration.
        return [
            Observation(value, dict(zip(keys, key, strict=True)))
            for key, value in dict(counts).items()
        ]

    return callback


def otlp_requested(signal: str) -> bool:
    """Whether the standard OTEL_* variables ask for OTLP export of a signal
    (``traces`` or ``metrics``): OTEL_<SIGNAL>_EXPORTER=otlp, or an OTLP endpoint
    set and the exporter not switched off."""
    exporter = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if exporter:
        return "otlp" in exporter.split(",")
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    )


def service_meters(
    service: str, metrics_addr: str, var: str, readers: Iterable[MetricReader] = ()
) -> tuple[Resource, MeterProvider]:
    """A process's resource (named by OTEL_SERVICE_NAME, default service) and meter
    provider: the given readers, Prometheus on metrics_addr when set (var names it in
    errors), and OTLP when the environment asks."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    all_readers = list(readers)
    if metrics_addr:
        all_readers.append(prometheus_reader(metrics_addr, var))
    return resource, meter_provider(resource, all_readers)


def meter_provider(resource: Resource, readers: list[MetricReader]) -> MeterProvider:
    """A provider with the given readers, plus OTLP when the environment asks."""
    if otlp_requested("metrics"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers = [*readers, PeriodicExportingMetricReader(OTLPMetricExporter())]
    return MeterProvider(resource=resource, metric_readers=readers)


def observe_tasks(meter: Meter, tasks: Callable[[], Iterable[TaskState]]) -> None:
    """Each background task (a supervisor's, a Periodic's, a consumer's): running (1)
    or waiting to restart (0), and its failures so far (HitlBackgroundTaskFailing
    fires on any)."""

    def running(_: CallbackOptions) -> Iterable[Observation]:
        for state in tasks():
            yield Observation(int(state.running), {"task": state.name})

    def failures(_: CallbackOptions) -> Iterable[Observation]:
        for state in tasks():
            yield Observation(state.failures, {"task": state.name})

    meter.create_observable_gauge(
        "hitl.task.running", [running], description="1 while a background task runs"
    )
    meter.create_observable_counter(
        "hitl.task.failures", [failures], description="Background task failures, by task"
    )
