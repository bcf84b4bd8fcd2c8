"""The Route pipeline, between the gRPC servicer and the pure core: validate, replay,
calibrate, decide, escalate, audit. No grpc here; the servicer converts messages.

Every step from the replay check to the replay insert runs without an await, so two
concurrent sends of one request_id cannot both escalate: the event loop runs one of
them to completion first."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.clock import Clock
from sidecar.core.decision import CalibrationFailure, Decision, decide
from sidecar.core.hashing import escalation_id
from sidecar.core.replay import ReplayCache
from sidecar.core.request import FloatArray, InputKind, RouteInput, Signals, signals_of
from sidecar.core.validation import validate
from sidecar.core.values import value
from sidecar.errors import EscalationRefused, InvalidRequest, RequestConflict, RequestError
from sidecar.escalation.record import Escalation
from sidecar.escalation.recorder import Recorder
from sidecar.policy.snapshot import Snapshot, SnapshotHolder
from sidecar.telemetry.audit import AuditLog
from sidecar.telemetry.metrics import RouterMetrics

_TINY = np.float32(1e-30)  # floor for log(p) of a zero probability


@value
class Routed:
    """A decision as answered to the caller."""

    request_id: str
    decision: Decision
    escalation_id: str
    ticket: int = 0  # the recorder's ticket for the escalation (0: none)


@dataclass(frozen=True, slots=True)
class Outcome:
    request_id: str
    model: str
    true_class: int | None
    true_label: str
    source: str


@dataclass(frozen=True, slots=True)
class OutcomeMatch:
    matched: bool
    correct: bool


@value
class TraceIds:
    trace_id: str = ""
    span_id: str = ""


ItemResult = Routed | RequestError | EscalationRefused

# The replay window keeps a request as one flat tuple of plain values (see
# ReplayCache): (model, fingerprint, ticket, *decision row). Its escalation_id is
# derived again on a replay, and the model string is interned, so a full window of
# 100,000 entries costs the same whatever the class count or escalation rate.


class Router:
    def __init__(
        self,
        holder: SnapshotHolder,
        recorder: Recorder,
        audit: AuditLog,
        metrics: RouterMetrics | None,
        clock: Clock,
        replay_capacity: int = 100_000,
        replay_ttl: float = 600.0,
    ) -> None:
        self._holder = holder
        self._recorder = recorder
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self._replay = ReplayCache(replay_capacity, replay_ttl)

    def route(self, request: RouteInput, trace: TraceIds) -> Routed:
        """Decide one request; raises RequestError or EscalationRefused."""
        snapshot = self._holder.current
        self._validate(request, snapshot, "")
        routed = self._replayed(request)
        if routed is not None:
            return routed
        if snapshot is None:  # decide() answers the no-policy fallback without signals
            return self._finish(request, None, CalibrationFailure.RAISED, trace)
        return self._finish(request, snapshot, self._calibrate(snapshot, [request])[0], trace)

    def route_batch(self, requests: Sequence[RouteInput], trace: TraceIds) -> list[ItemResult]:
        """Decide each request; the calibrator runs once per model in the batch."""
        snapshot = self._holder.current
        results: list[ItemResult | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            try:
                self._validate(request, snapshot, f"requests[{i}]")
            except RequestError as exc:
                results[i] = exc
                continue
            by_model[request.model].append(i)
        signals: dict[int, Signals | CalibrationFailure] = {}
        if snapshot is not None:
            for indices in by_model.values():
                rows = self._calibrate(snapshot, [requests[i] for i in indices])
                signals.update(zip(indices, rows, strict=True))
        for indices in by_model.values():
            for i in indices:
                results[i] = self._item(requests[i], snapshot, signals.get(i), trace)
        return [result for result in results if result is not None]

    async def durable(self, results: Sequence[ItemResult]) -> None:
        """Wait until every escalation among results is durable; raises
        EscalationRefused when the recorder cannot make it so."""
        ticket = max((r.ticket for r in results if isinstance(r, Routed)), default=0)
        if ticket:
            await self._recorder.durable(ticket)

    def record_outcome(self, outcome: Outcome) -> OutcomeMatch:
        if not outcome.request_id:
            raise InvalidRequest("request_id", "is required")
        if not outcome.model:
            raise InvalidRequest("model", "is required")
        if outcome.true_class is None and not outcome.true_label:
            raise InvalidRequest("true_class", "true_class or true_label is required")
        if outcome.true_class is not None and outcome.true_class < 0:
            raise InvalidRequest("true_class", "must be >= 0")
        remembered = self._replay.get(outcome.request_id, self._clock.now())
        if remembered is None or remembered[0] != outcome.model:
            self._audit.write({**_outcome_fields(outcome), "matched": False})
            return OutcomeMatch(matched=False, correct=False)
        decision = Decision.from_row(remembered[3:])
        if outcome.true_class is not None:
            correct = outcome.true_class == decision.predicted_class
        else:
            correct = outcome.true_label == decision.predicted_label
        self._audit.write(
            {
                **_outcome_fields(outcome),
                "matched": True,
                "correct": correct,
                "tier": decision.tier.name,
                "predicted_class": decision.predicted_class,
                "calibrated_confidence": decision.confidence,
            },
        )
        if self._metrics is not None:
            self._metrics.outcome(outcome.model, decision.tier.name, correct)
        return OutcomeMatch(matched=True, correct=correct)

    # -- steps ------------------------------------------------------------------------

    def _validate(self, request: RouteInput, snapshot: Snapshot | None, prefix: str) -> None:
        try:
            validate(request, snapshot.class_counts if snapshot else None)
        except InvalidRequest as exc:
            if self._metrics is not None:
                self._metrics.invalid(exc.field.split("[")[0])
            if prefix:
                raise exc.at(prefix) from None
            raise

    def _replayed(self, request: RouteInput) -> Routed | None:
        remembered = self._replay.get(request.request_id, self._clock.now())
        if remembered is None:
            return None
        model, fingerprint, ticket = remembered[:3]
        if model != request.model or fingerprint != request.fingerprint():
            raise RequestConflict(
                "request_id",
                f"{request.request_id!r} was routed recently with a different model or logits",
            )
        decision = Decision.from_row(remembered[3:])
        esc_id = escalation_id(model, request.request_id) if decision.escalate else ""
        return Routed(request.request_id, decision, esc_id, ticket)

    def _calibrate(
        self, snapshot: Snapshot, requests: Sequence[RouteInput]
    ) -> list[Signals | CalibrationFailure]:
        calibrator = snapshot.calibrators[requests[0].model]
        if len(requests) == 1:  # Route: a view, not a copy
            logits = _as_logits(requests[0])[np.newaxis, :]
        else:
            logits = np.stack([_as_logits(request) for request in requests])
        try:
            probabilities = calibrator(logits)
        except Exception:  # any failure of the graph is a fallback, never a crash
            return [CalibrationFailure.RAISED] * len(requests)
        return [
            CalibrationFailure.NON_FINITE if s is None else s for s in signals_of(probabilities)
        ]

    def _item(
        self,
        request: RouteInput,
        snapshot: Snapshot | None,
        signals: Signals | CalibrationFailure | None,
        trace: TraceIds,
    ) -> ItemResult:
        try:
            routed = self._replayed(request)
            if routed is not None:
                return routed
            return self._finish(request, snapshot, signals or CalibrationFailure.RAISED, trace)
        except (RequestError, EscalationRefused) as exc:
            return exc

    def _finish(
        self,
        request: RouteInput,
        snapshot: Snapshot | None,
        signals: Signals | CalibrationFailure,
        trace: TraceIds,
    ) -> Routed:
        now = self._clock.now()
        policy = snapshot.policy if snapshot else None
        decision = decide(request, policy, signals, now)
        esc_id, ticket = "", 0
        if decision.escalate:
            esc_id = escalation_id(request.model, request.request_id)
            ticket = self._escalate(request, decision, esc_id, trace, now)
        routed = Routed(request.request_id, decision, esc_id, ticket)
        self._audit.write(_audit_fields(request, routed, trace, now))
        self._replay.put(
            request.request_id,
            (sys.intern(request.model), request.fingerprint(), ticket, *decision.row()),
            now,
        )
        if self._metrics is not None:
            domains = policy.models[request.model].thresholds.domains if policy else {}
            domain = request.domain if request.domain in domains else "default"
            self._metrics.record(request.model, domain, decision)
        return routed

    def _escalate(
        self, request: RouteInput, decision: Decision, esc_id: str, trace: TraceIds, now: float
    ) -> int:
        escalation = Escalation(
            escalation_id=esc_id,
            request_id=request.request_id,
            model=request.model,
            model_version=request.model_version,
            domain=request.domain,
            tier=decision.tier.name,
            reason=decision.reason.name,
            rule_id=decision.rule_id,
            predicted_class=decision.predicted_class,
            predicted_label=decision.predicted_label,
            calibrated_confidence=decision.confidence,
            policy_revision=decision.policy_revision,
            calibration_version=decision.calibration_version,
            experiment_arm=decision.arm,
            degraded=decision.degraded,
            input_ref=request.input_ref,
            trace_id=trace.trace_id,
            created_at=now,
            context=request.context or {},
            string_attributes=request.string_attributes or {},
            numeric_attributes=request.numeric_attributes or {},
            logits=request.logits.tolist(),
            input_kind="PROBABILITIES"
            if request.input_kind == InputKind.PROBABILITIES
            else "LOGITS",
        )
        try:
            ticket = self._recorder.record(escalation)
        except EscalationRefused:
            if self._metrics is not None:
                self._metrics.escalation(request.model, decision.tier.name, "refused")
            raise
        if self._metrics is not None:
            self._metrics.escalation(request.model, decision.tier.name, "recorded")
        return ticket


def _as_logits(request: RouteInput) -> FloatArray:
    if request.input_kind == InputKind.PROBABILITIES:
        return np.log(np.maximum(request.logits, _TINY))
    return request.logits


def _audit_fields(
    request: RouteInput, routed: Routed, trace: TraceIds, now: float
) -> dict[str, Any]:
    decision = routed.decision
    return {
        "event": "route.decision",
        "timestamp": now,
        "request_id": request.request_id,
        "model": request.model,
        "model_version": request.model_version,
        "domain": request.domain,
        "input_kind": InputKind(request.input_kind).name,
        "logits": request.logits,
        "string_attributes": request.string_attributes or {},
        "numeric_attributes": request.numeric_attributes or {},
        "input_ref": request.input_ref,
        "context": request.context or {},
        "tier": decision.tier.name,
        "reason": decision.reason.name,
        "rule_id": decision.rule_id,
        "predicted_class": decision.predicted_class,
        "predicted_label": decision.predicted_label,
        "calibrated_confidence": decision.confidence,
        "margin": decision.margin,
        "entropy": decision.entropy,
        "t_high": decision.t_high,
        "t_low": decision.t_low,
        "experiment_arm": decision.arm,
        "degraded": decision.degraded,
        "policy_revision": decision.policy_revision,
        "calibration_version": decision.calibration_version,
        "escalation_id": routed.escalation_id,
        "trace_id": trace.trace_id,
        "span_id": trace.span_id,
    }


def _outcome_fields(outcome: Outcome) -> dict[str, Any]:
    return {
        "event": "route.outcome",
        "request_id": outcome.request_id,
        "model": outcome.model,
        "true_class": outcome.true_class,
        "true_label": outcome.true_label,
        "source": outcome.source,
    }
