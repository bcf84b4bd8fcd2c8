"""The Route pipeline, between the gRPC servicer and the pure core: validate, replay,
calibrate, decide, escalate, audit. No grpc here; the servicer converts messages.

Every step from the replay check to the replay insert runs without an await, so two
concurrent sends of one request_id cannot both escalate: the event loop runs one of
them to completion first."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidecar.clock import Clock
from sidecar.core.batch import BatchRows, decide_rows
from sidecar.core.decision import (
    REASON_NAMES,
    TIER_NAMES,
    CalibrationFailure,
    Decision,
    decide,
    escalates,
    is_degraded,
)
from sidecar.core.hashing import escalation_id
from sidecar.core.replay import ReplayCache
from sidecar.core.request import FloatArray, InputKind, RouteInput
from sidecar.core.signals import Signals, signal_rows, signals_of
from sidecar.core.thresholds import UnknownDomain
from sidecar.core.validation import check_outcome, validate
from sidecar.core.values import value
from sidecar.errors import EscalationRefused, InvalidRequest, RequestConflict, RequestError
from sidecar.escalation.decisions import DecisionStream
from sidecar.escalation.record import Escalation
from sidecar.escalation.recorder import Recorder
from sidecar.guards import DriftGuards
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
DecisionRow = tuple[Any, ...]  # a decision as Decision.row() gives it
_KIND_NAMES = {int(kind): kind.name for kind in InputKind}  # of validated requests


@dataclass(slots=True)
class BatchRouted:
    """A batch's answers, in request order: row i's decision (as Decision.row() gives
    it) and escalation id, or the error that answers row i. No object per row."""

    request_ids: Sequence[str]
    decisions: list[DecisionRow | None]
    escalation_ids: list[str]
    errors: dict[int, RequestError | EscalationRefused] = field(default_factory=dict)
    ticket: int = 0  # the recorder's ticket covering every escalation of the batch

    def refuse_escalations(self, exc: EscalationRefused) -> None:
        """The escalations could not be made durable: no escalated row may be acted on."""
        for i, esc_id in enumerate(self.escalation_ids):
            if esc_id and i not in self.errors:
                self.errors[i] = exc

    def result(self, i: int) -> ItemResult:
        """Row i as the unary path answers it (tests, and code that wants objects)."""
        if i in self.errors:
            return self.errors[i]
        row = self.decisions[i]
        assert row is not None
        esc_id = self.escalation_ids[i]
        return Routed(
            self.request_ids[i], Decision.from_row(row), esc_id, self.ticket if esc_id else 0
        )


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
        decisions: DecisionStream | None = None,
    ) -> None:
        self._holder = holder
        self._recorder = recorder
        self._decisions = decisions
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self._replay = ReplayCache(replay_capacity, replay_ttl)
        self.guards = DriftGuards()
        holder.subscribe(self.guards.on_snapshot)
        if holder.current is not None:
            self.guards.on_snapshot(holder.current)

    async def route(self, request: RouteInput, trace: TraceIds) -> Routed:
        """Decide one request and return once its escalation, if any, is as durable as
        the spool's setting promises; raises RequestError or EscalationRefused (the
        caller must not act on a review nobody will see)."""
        routed = self.decide(request, trace)
        if routed.ticket:
            await self._recorder.durable(routed.ticket)
        return routed

    async def route_batch(
        self,
        requests: Sequence[RouteInput],
        trace: TraceIds,
        finite: Sequence[bool] | None = None,
    ) -> BatchRouted:
        """``decide_batch``, returning once the batch's escalations are durable; if
        they cannot be made so, each escalated row is answered with the refusal."""
        batch = self.decide_batch(requests, trace, finite)
        if batch.ticket:
            try:
                await self._recorder.durable(batch.ticket)
            except EscalationRefused as exc:
                batch.refuse_escalations(exc)
        return batch

    def decide(self, request: RouteInput, trace: TraceIds) -> Routed:
        """Decide one request, its escalation written but not yet durable (``route``
        waits for that); raises RequestError or EscalationRefused."""
        snapshot = self._holder.current
        self._validate(request, snapshot, "")
        return self._decide_one(request, snapshot, trace)

    def decide_batch(
        self,
        requests: Sequence[RouteInput],
        trace: TraceIds,
        finite: Sequence[bool] | None = None,
    ) -> BatchRouted:
        """Decide each request (``route_batch`` then waits for durability): the
        calibrator runs once per model in the batch, the
        decisions are made over columns (``core.batch``), a model's escalations are
        written to the spool together and its audit records in one go. finite, when
        given: whether each request's logits are all finite, checked at once."""
        snapshot = self._holder.current
        now = self._clock.now()
        n = len(requests)
        out = BatchRouted([r.request_id for r in requests], [None] * n, [""] * n)
        fresh: dict[str, list[int]] = defaultdict(list)
        again: list[int] = []  # a request_id seen earlier in this batch
        seen: set[str] = set()
        for i, request in enumerate(requests):
            try:
                self._validate(request, snapshot, f"requests[{i}]", finite[i] if finite else None)
                if request.request_id in seen:
                    again.append(i)
                    continue
                seen.add(request.request_id)
                routed = self._replayed(request)
            except RequestError as exc:
                out.errors[i] = exc
                continue
            if routed is None:
                fresh[request.model].append(i)
            else:
                self._answer(out, i, routed)
        for model, indices in fresh.items():
            if snapshot is None:  # the no-policy fallback, request by request
                for i in indices:
                    self._answer(out, i, self._single(requests[i], None, trace))
                continue
            chosen = [requests[i] for i in indices]
            self._decide_model(out, chosen, indices, snapshot, model, trace, now)
        for i in again:  # after the first sends: each is a replay (or a conflict)
            self._answer(out, i, self._single(requests[i], snapshot, trace))
        return out

    async def record_outcome(self, outcome: Outcome) -> OutcomeMatch:
        """``match_outcome``, returning once the outcome bound for the feedback service
        (when there is one) is durable; EscalationRefused when it cannot be kept."""
        match, ticket = self.match_outcome(outcome)
        if ticket and self._decisions is not None:
            await self._decisions.recorder.durable(ticket)
        return match

    def match_outcome(self, outcome: Outcome) -> tuple[OutcomeMatch, int]:
        """Check an outcome, write it for the feedback service (the ticket to wait
        for; 0 without one), and audit it against the decision the replay window
        remembers."""
        snapshot = self._holder.current
        check_outcome(
            outcome.request_id,
            outcome.model,
            outcome.true_class,
            outcome.true_label,
            outcome.source,
            snapshot.class_counts.get(outcome.model) if snapshot else None,
        )
        ticket = 0
        if self._decisions is not None:
            ticket = self._decisions.outcome(
                {**_outcome_fields(outcome), "occurred_at": self._clock.now()}
            )
        return self._match(outcome), ticket

    def _match(self, outcome: Outcome) -> OutcomeMatch:
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
                "calibrated_confidence": decision.calibrated_confidence,
            },
        )
        if self._metrics is not None:
            self._metrics.outcome(outcome.model, decision.tier.name, correct)
        return OutcomeMatch(matched=True, correct=correct)

    # -- steps ------------------------------------------------------------------------

    def _validate(
        self,
        request: RouteInput,
        snapshot: Snapshot | None,
        prefix: str,
        finite: bool | None = None,
    ) -> None:
        try:
            validate(request, snapshot.class_counts if snapshot else None, finite)
            # Inline: a known domain (the common case) costs no call on the Route path.
            if (
                request.domain
                and snapshot is not None
                and request.domain not in snapshot.policy.models[request.model].thresholds.domains
            ):
                self._unknown_domain(request, snapshot)
        except InvalidRequest as exc:
            if self._metrics is not None:
                self._metrics.invalid(exc.field.split("[")[0])
            if prefix:
                raise exc.at(prefix) from None
            raise

    def _unknown_domain(self, request: RouteInput, snapshot: Snapshot) -> None:
        """A domain the model's policy does not name is counted, and refused when the
        policy says unknown_domain: reject (otherwise the thresholds say what it gets)."""
        table = snapshot.policy.models[request.model].thresholds
        if self._metrics is not None:
            self._metrics.unknown_domain(request.model, request.domain)
        if table.unknown is UnknownDomain.REJECT:
            known = ", ".join(sorted(table.domains)) or "none"
            raise InvalidRequest(
                "domain",
                f"unknown domain {request.domain!r} for model {request.model!r} (known: {known})",
            )

    def _replayed(self, request: RouteInput) -> Routed | None:
        remembered = self._replay.get(request.request_id, self._clock.now())
        if remembered is None:
            return None
        model, fingerprint, ticket = remembered[:3]
        if model != request.model or fingerprint != request.fingerprint():
            raise RequestConflict(
                "request_id",
                f"{request.request_id!r} was routed recently with different inputs (model,"
                " model_version, input_kind, logits, domain or attributes)",
            )
        decision = Decision.from_row(remembered[3:])
        esc_id = escalation_id(model, request.request_id) if decision.escalate else ""
        return Routed(request.request_id, decision, esc_id, ticket)

    def _calibrate(
        self, snapshot: Snapshot, requests: Sequence[RouteInput]
    ) -> list[Signals | CalibrationFailure]:
        probabilities = self._probabilities(snapshot, requests)
        if probabilities is None:
            return [CalibrationFailure.RAISED] * len(requests)
        return [
            CalibrationFailure.NON_FINITE if s is None else s for s in signals_of(probabilities)
        ]

    def _probabilities(
        self, snapshot: Snapshot, requests: Sequence[RouteInput]
    ) -> FloatArray | None:
        """One calibrator run for requests of one model; None when the graph fails."""
        calibrator = snapshot.calibrators[requests[0].model]
        if len(requests) == 1:  # Route: a view, not a copy
            logits = _as_logits(requests[0])[np.newaxis, :]
        else:
            logits = np.stack([_as_logits(request) for request in requests])
        try:
            return calibrator(logits)
        except Exception:  # any failure of the graph is a fallback, never a crash
            return None

    def _single(
        self, request: RouteInput, snapshot: Snapshot | None, trace: TraceIds
    ) -> ItemResult:
        """One request of a batch routed on its own (a repeated request_id, or no policy)."""
        try:
            return self._decide_one(request, snapshot, trace)
        except (RequestError, EscalationRefused) as exc:
            return exc

    def _decide_one(
        self, request: RouteInput, snapshot: Snapshot | None, trace: TraceIds
    ) -> Routed:
        """A validated request's replayed decision, or its own new one."""
        routed = self._replayed(request)
        if routed is not None:
            return routed
        if snapshot is None:  # decide() answers the no-policy fallback without signals
            return self._finish(request, None, CalibrationFailure.RAISED, trace)
        return self._finish(request, snapshot, self._calibrate(snapshot, [request])[0], trace)

    def _answer(self, out: BatchRouted, i: int, result: ItemResult) -> None:
        if not isinstance(result, Routed):
            out.errors[i] = result
            return
        out.decisions[i] = result.decision.row()
        out.escalation_ids[i] = result.escalation_id
        out.ticket = max(out.ticket, result.ticket)

    def _finish(
        self,
        request: RouteInput,
        snapshot: Snapshot | None,
        signals: Signals | CalibrationFailure,
        trace: TraceIds,
    ) -> Routed:
        now = self._clock.now()
        policy = snapshot.policy if snapshot else None
        drifted = False
        if self.guards.by_model and isinstance(signals, Signals):
            guard = self.guards.by_model.get(request.model)
            if guard is not None:
                drifted = guard.observe(signals.confidence, signals.predicted_class)
        decision = decide(request, policy, signals, now, drifted)
        row = decision.row()
        esc_id, ticket = "", 0
        if decision.escalate:
            esc_id = escalation_id(request.model, request.request_id)
            ticket = self._escalate(request, row, esc_id, trace, now)
        elif self._decisions is not None and self._decisions.sampled(request.request_id):
            self._decisions.decisions([_decision_fields(request, row, trace, now)])
        self._audit.write(_audit_fields(request, row, esc_id, trace, now))
        self._replay.put(
            request.request_id,
            (sys.intern(request.model), request.fingerprint(), ticket, *row),
            now,
        )
        if self._metrics is not None:
            domains = policy.models[request.model].thresholds.domains if policy else {}
            domain = request.domain if request.domain in domains else "default"
            self._metrics.record(request.model, domain, decision)
        return Routed(request.request_id, decision, esc_id, ticket)

    def _decide_model(
        self,
        out: BatchRouted,
        requests: Sequence[RouteInput],
        indices: Sequence[int],
        snapshot: Snapshot,
        model: str,
        trace: TraceIds,
        now: float,
    ) -> None:
        """The fresh requests of one model (rows indices of out): one calibrator run,
        the decisions as columns, escalations written together, audit in one go."""
        probabilities = self._probabilities(snapshot, requests)
        signals = CalibrationFailure.RAISED if probabilities is None else signal_rows(probabilities)
        policy = snapshot.policy
        request_ids = [r.request_id for r in requests]
        drifted = False
        guard = self.guards.by_model.get(model)
        if guard is not None and not isinstance(signals, CalibrationFailure):
            drifted = guard.observe_rows(signals)
        columns = decide_rows(
            policy.models[model],
            policy.revision,
            policy.is_stale(now),
            BatchRows(
                request_ids,
                [r.domain for r in requests],
                [r.model_version for r in requests],
                [r.string_attributes for r in requests],
                [r.numeric_attributes for r in requests],
            ),
            signals,
            drifted,
        )
        rows = columns.rows()
        tickets = [0] * len(rows)
        esc_ids = [""] * len(rows)
        refused = self._escalate_rows(out, requests, indices, rows, esc_ids, tickets, trace, now)
        kept = [k for k in range(len(rows)) if k not in refused] if refused else range(len(rows))
        if self._decisions is not None and (sampled := self._decisions.sampled_of(request_ids)):
            self._decisions.decisions(
                [
                    _decision_fields(requests[k], rows[k], trace, now)
                    for k in sampled
                    if not esc_ids[k] and k not in refused
                ]
            )
        self._audit.write_many(
            [_audit_fields(requests[k], rows[k], esc_ids[k], trace, now) for k in kept]
        )
        name = sys.intern(model)
        self._replay.put_many(
            [(requests[k].request_id, (name, requests[k].fingerprint(), tickets[k], *rows[k]))
             for k in kept],
            now,
        )  # fmt: skip
        for k in kept:
            out.decisions[indices[k]] = rows[k]
            out.escalation_ids[indices[k]] = esc_ids[k]
        if self._metrics is not None:
            known = policy.models[model].thresholds.domains
            self._metrics.record_columns(
                model,
                [requests[k].domain if requests[k].domain in known else "default" for k in kept],
                [columns.tier[k] for k in kept],
                [columns.reason[k] for k in kept],
                [columns.experiment_arm[k] for k in kept],
            )

    def _escalate_rows(
        self,
        out: BatchRouted,
        requests: Sequence[RouteInput],
        indices: Sequence[int],
        rows: Sequence[DecisionRow],
        esc_ids: list[str],
        tickets: list[int],
        trace: TraceIds,
        now: float,
    ) -> set[int]:
        """Record the escalations among rows together; fill esc_ids and tickets; the
        rows whose escalation was refused (answered with the refusal)."""
        escalating = [k for k, row in enumerate(rows) if escalates(row[0], row[1])]
        if not escalating:
            return set()
        model = requests[0].model
        escalations = []
        for k in escalating:
            esc_ids[k] = escalation_id(model, requests[k].request_id)
            escalations.append(_escalation(requests[k], rows[k], esc_ids[k], trace, now))
        refused = set()
        for k, ticket in zip(escalating, self._recorder.record_many(escalations), strict=True):
            tier = TIER_NAMES[rows[k][0]]
            if isinstance(ticket, EscalationRefused):
                refused.add(k)
                out.errors[indices[k]] = ticket
                if self._metrics is not None:
                    self._metrics.escalation(model, tier, "refused")
                continue
            tickets[k] = ticket
            out.ticket = max(out.ticket, ticket)
            if self._metrics is not None:
                self._metrics.escalation(model, tier, "recorded")
        return refused

    def _escalate(
        self, request: RouteInput, row: DecisionRow, esc_id: str, trace: TraceIds, now: float
    ) -> int:
        tier = TIER_NAMES[row[0]]
        try:
            ticket = self._recorder.record(_escalation(request, row, esc_id, trace, now))
        except EscalationRefused:
            if self._metrics is not None:
                self._metrics.escalation(request.model, tier, "refused")
            raise
        if self._metrics is not None:
            self._metrics.escalation(request.model, tier, "recorded")
        return ticket


def _as_logits(request: RouteInput) -> FloatArray:
    if request.input_kind == InputKind.PROBABILITIES:
        logs: FloatArray = np.log(np.maximum(request.logits, _TINY))
        return logs
    return request.logits


def _escalation(
    request: RouteInput, row: DecisionRow, esc_id: str, trace: TraceIds, now: float
) -> Escalation:
    tier, reason, cls, label, confidence, _, _, rule_id, _, _, arm, revision, version = row
    return Escalation(
        escalation_id=esc_id,
        request_id=request.request_id,
        model=request.model,
        model_version=request.model_version,
        domain=request.domain,
        tier=TIER_NAMES[tier],
        reason=REASON_NAMES[reason],
        rule_id=rule_id,
        predicted_class=cls,
        predicted_label=label,
        calibrated_confidence=confidence,
        policy_revision=revision,
        calibration_version=version,
        experiment_arm=arm,
        degraded=is_degraded(reason),
        input_ref=request.input_ref,
        trace_id=trace.trace_id,
        span_id=trace.span_id,
        created_at=now,
        context=request.context or {},
        string_attributes=request.string_attributes or {},
        numeric_attributes=request.numeric_attributes or {},
        logits=request.logits.tolist(),
        input_kind="PROBABILITIES" if request.input_kind == InputKind.PROBABILITIES else "LOGITS",
    )


def _decision_fields(
    request: RouteInput, row: DecisionRow, trace: TraceIds, now: float
) -> dict[str, Any]:
    """A decision's record for the feedback service: an escalation's fields without
    its id, the input's reference and the context. Written out beside _escalation
    rather than shared with it: building one from the other cost the escalated Route
    more instructions (measured: see
    docs/performance.md#decision-records-written-out-beside-escalations)."""
    tier, reason, cls, label, confidence, _, _, rule_id, _, _, arm, revision, version = row
    return {
        "request_id": request.request_id,
        "model": request.model,
        "model_version": request.model_version,
        "domain": request.domain,
        "tier": TIER_NAMES[tier],
        "reason": REASON_NAMES[reason],
        "rule_id": rule_id,
        "predicted_class": cls,
        "predicted_label": label,
        "calibrated_confidence": confidence,
        "policy_revision": revision,
        "calibration_version": version,
        "experiment_arm": arm,
        "degraded": is_degraded(reason),
        "trace_id": trace.trace_id,
        "span_id": trace.span_id,
        "created_at": now,
        "logits": request.logits,
        "input_kind": _KIND_NAMES[request.input_kind],
        "string_attributes": request.string_attributes or {},
        "numeric_attributes": request.numeric_attributes or {},
    }


def _audit_fields(
    request: RouteInput, row: DecisionRow, esc_id: str, trace: TraceIds, now: float
) -> dict[str, Any]:
    (tier, reason, cls, label, confidence, margin, entropy, rule_id, t_high, t_low, arm,
     revision, version) = row  # fmt: skip
    return {
        "event": "route.decision",
        "timestamp": now,
        "request_id": request.request_id,
        "model": request.model,
        "model_version": request.model_version,
        "domain": request.domain,
        "input_kind": _KIND_NAMES[request.input_kind],
        "logits": request.logits,
        "string_attributes": request.string_attributes or {},
        "numeric_attributes": request.numeric_attributes or {},
        "input_ref": request.input_ref,
        "context": request.context or {},
        "tier": TIER_NAMES[tier],
        "reason": REASON_NAMES[reason],
        "rule_id": rule_id,
        "predicted_class": cls,
        "predicted_label": label,
        "calibrated_confidence": confidence,
        "margin": margin,
        "entropy": entropy,
        "t_high": t_high,
        "t_low": t_low,
        "experiment_arm": arm,
        "degraded": is_degraded(reason),
        "policy_revision": revision,
        "calibration_version": version,
        "escalation_id": esc_id,
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
