"""The feedback log's rules: validate each event (``validation``), check that the
sender's roles may send its type (``access``), then append it under the sender's
name, idempotently by ``feedback_id``. No transport here; the clock and the store
are given.

Each principal's events are rate-limited (``limits``). A single Record refuses an
invalid event with the error itself (INVALID_ARGUMENT or
PERMISSION_DENIED naming the field); in a batch each event is judged on its own and
a refused one is REJECTED in place, with the same message, while the rest are kept.

As it goes, the log times the loop (``latency``: a review's stages when it arrives, a
label's join when it and its decision have both arrived) and links the current
call's span to the Route span of each decision the call is about."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal
from sidecar.clock import Clock
from sidecar.core.validation import MAX_REQUEST_ID, check_text
from sidecar.errors import InvalidRequest, PermissionDenied
from sidecar.feedback.access import check_type
from sidecar.feedback.dataset import Chosen, Dataset, chosen_label, compile_dataset
from sidecar.feedback.latency import Stage, join_stages, review_stages
from sidecar.feedback.limits import RateLimits
from sidecar.feedback.metrics import FeedbackMetrics
from sidecar.feedback.records import (
    Decided,
    Known,
    Outcome,
    Received,
    decided,
    event_of,
    received,
    type_name,
)
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.validation import (
    check_batch_size,
    check_decision,
    check_event,
    check_retraction,
    export_query,
    label_class,
    labels_query,
)
from sidecar.telemetry.links import link_current_span, recording_span

log = structlog.get_logger("hitl.feedback")

REJECTED = "REJECTED"
DEFAULT_JOIN_WINDOW = 7 * 86400.0
DEFAULT_MONITOR_WINDOW = 86400.0


@dataclass(frozen=True, slots=True)
class Result:
    key: str  # the event's feedback_id, the decision's request_id
    status: str  # an Outcome, or REJECTED
    message: str = ""  # why it was REJECTED or a CONFLICT


@dataclass(frozen=True, slots=True)
class History:
    """What is known about one request: its decision (None until recorded) and the
    events about it, in the order received."""

    request_id: str
    decision: Decided | None
    events: list[Received]


class FeedbackLog:
    """``join_window``: seconds an event may wait for its decision before the sweep
    dead-letters it."""

    def __init__(
        self,
        store: FeedbackStore,
        clock: Clock,
        metrics: FeedbackMetrics | None = None,
        join_window: float = DEFAULT_JOIN_WINDOW,
        limits: RateLimits | None = None,
        monitor_window: float = DEFAULT_MONITOR_WINDOW,
    ) -> None:
        self.store = store
        self.join_window = join_window
        self.monitor_window = monitor_window
        self._limits = limits
        self._clock = clock
        self._metrics = metrics

    def record(self, principal: Principal, event: fpb.FeedbackEvent) -> Result:
        """Append one event; InvalidRequest, PermissionDenied or RateLimited when it is
        refused."""
        self._spend(principal, 1)
        (judged,), known = self._judge(principal, [event])
        if not isinstance(judged, int):
            raise judged
        return self._append(principal, [(event, judged)], known)[0]

    def record_batch(
        self, principal: Principal, events: Sequence[fpb.FeedbackEvent]
    ) -> list[Result]:
        """Append each acceptable event; a refused one is REJECTED in place. The whole
        batch is RateLimited when the sender's rate cannot cover it."""
        check_batch_size(len(events))
        self._spend(principal, len(events))
        results: list[Result | None] = [None] * len(events)
        valid: list[tuple[int, tuple[fpb.FeedbackEvent, int]]] = []
        verdicts, known = self._judge(principal, events)
        for i, (event, judged) in enumerate(zip(events, verdicts, strict=True)):
            if not isinstance(judged, int):
                results[i] = Result(event.feedback_id, REJECTED, str(judged))
                self._count(event.type, REJECTED)
                continue
            valid.append((i, (event, judged)))
        appended = self._append(principal, [judged for _, judged in valid], known)
        for (i, _), result in zip(valid, appended, strict=True):
            results[i] = result
        return [result for result in results if result is not None]

    def record_decisions(
        self, principal: Principal, records: Sequence[fpb.DecisionRecord]
    ) -> list[Result]:
        """Keep each valid decision under the sender's name; a refused one is REJECTED."""
        check_batch_size(len(records), "decisions")
        self._spend(principal, len(records))
        now = self._clock.now()
        results: list[Result | None] = [None] * len(records)
        valid: list[tuple[int, fpb.DecisionRecord]] = []
        for i, record in enumerate(records):
            try:
                check_decision(record)
            except InvalidRequest as exc:
                results[i] = Result(record.request_id, REJECTED, str(exc))
                continue
            valid.append((i, record))
        link_current_span((r.trace_id, r.span_id) for _, r in valid)
        outcomes = self.store.add_decisions([decided(r, principal.name, now) for _, r in valid])
        self._joined(
            {r.request_id: r.decided_at for (_, r), o in zip(valid, outcomes, strict=True)
             if o is Outcome.ACCEPTED},
            now,
        )  # fmt: skip
        for (i, record), outcome in zip(valid, outcomes, strict=True):
            message = ""
            if outcome is Outcome.CONFLICT:
                message = f"request_id {record.request_id!r} has another decision; it stays"
                log.warning(
                    "feedback.decision_conflict",
                    request_id=record.request_id,
                    sender=principal.name,
                )
            results[i] = Result(record.request_id, outcome.value, message)
        final = [result for result in results if result is not None]
        if self._metrics is not None:
            for result in final:
                self._metrics.decisions.add(1, {"status": result.status})
        return final

    def history(self, request_id: str) -> History:
        """request_id's decision and every event about it, in the order received."""
        check_text(request_id, "request_id", MAX_REQUEST_ID, required=True)
        decision = self.store.decision(request_id)
        return History(request_id, decision, self.store.history(request_id))

    def labels(self, request: fpb.LabelsRequest) -> list[tuple[str, Chosen]]:
        """(request_id, its label) for each asked-for request that has one by the
        dataset's rule over the asked-for sources, in the order asked."""
        request_ids, sources = labels_query(request)
        found = {item.decision["request_id"]: item for item in self.store.labels_of(request_ids)}
        chosen = {rid: chosen_label(item, sources) for rid, item in found.items()}
        return [(rid, label) for rid in request_ids if (label := chosen.get(rid)) is not None]

    def export(self, request: fpb.ExportDatasetRequest) -> Dataset:
        """The dataset the request's query compiles from the log now."""
        query = export_query(request, self._clock.now())
        return compile_dataset(query, self.store.labelled(query.model, query.since, query.until))

    def maintain(self) -> None:
        """What the service's periodic task does: the dead-letter sweep, then the loop's
        health over the monitor window."""
        self.sweep()
        self.monitor()

    def monitor(self) -> dict[str, Any]:
        """Coverage, override rate and label delay per model and tier over the decisions
        of the last monitor_window seconds, into the metrics; the reading."""
        since = self._clock.now() - self.monitor_window
        coverage: dict[tuple[str, ...], float] = {}
        overrides: dict[tuple[str, ...], float] = {}
        for h in self.store.health(since):
            coverage[(h.model, h.tier)] = h.labelled / h.decisions
            if h.labelled:
                overrides[(h.model, h.tier)] = h.overridden / h.labelled
        found: dict[tuple[str, str], list[float]] = defaultdict(list)
        for model, tier, delay in self.store.label_delays(since):
            found[(model, tier)].append(delay)
        delays: dict[tuple[str, ...], float] = {}
        for (model, tier), seconds in found.items():
            seconds.sort()
            for quantile, share in (("p50", 0.5), ("p90", 0.9)):
                at = min(len(seconds) - 1, int(share * len(seconds)))
                delays[(model, tier, quantile)] = seconds[at]
        if self._metrics is not None:
            self._metrics.refresh(coverage, overrides, delays)
        return {"coverage": coverage, "override_rate": overrides, "label_delay": delays}

    def sweep(self) -> int:
        """Dead-letter the events that waited longer than the join window for their
        decision; how many."""
        now = self._clock.now()
        reason = f"no decision for its request_id within the join window ({self.join_window:g} s)"
        count = self.store.dead_letter_unattributed(now - self.join_window, reason, now)
        if count:
            log.warning("feedback.dead_lettered", events=count, join_window=self.join_window)
            if self._metrics is not None:
                self._metrics.dead_lettered.add(count)
        return count

    def _append(
        self,
        principal: Principal,
        events: Sequence[tuple[fpb.FeedbackEvent, int]],
        known: dict[str, Known],
    ) -> list[Result]:
        """Store each event with its label's class (-1: none); known: what is known of
        the decisions they are about."""
        if not events:
            return []
        now = self._clock.now()
        outcomes = self.store.add([received(e, principal.name, now, c) for e, c in events])
        results = []
        for (event, _), outcome in zip(events, outcomes, strict=True):
            self._count(event.type, outcome)
            if outcome is Outcome.ACCEPTED and self._metrics is not None:
                self._arrived(event, known.get(event.request_id), now)
            message = ""
            if outcome is Outcome.CONFLICT:
                message = f"feedback_id {event.feedback_id!r} holds another event; it stays"
                log.warning(
                    "feedback.conflict", feedback_id=event.feedback_id, sender=principal.name
                )
            results.append(Result(event.feedback_id, outcome.value, message))
        return results

    def _judge(
        self, principal: Principal, events: Sequence[fpb.FeedbackEvent]
    ) -> tuple[list[InvalidRequest | PermissionDenied | int], dict[str, Known]]:
        """Each event's refusal, or its label's class (-1: none, or a name that cannot be
        told yet): its fields and the sender's right to its type, then a label against
        the classes of the decision it is about, when that decision is known (one
        look-up for all, whose findings come back too: for every event when the call
        is traced, for labels only otherwise)."""
        judged: list[InvalidRequest | PermissionDenied | int] = []
        for event in events:
            try:
                _check(principal, event)
            except (InvalidRequest, PermissionDenied) as exc:
                judged.append(exc)
                continue
            judged.append(-1)
        # Labels need their decisions; other events only for the call span's links.
        traced = recording_span()
        wanted = [
            event.request_id
            for event, verdict in zip(events, judged, strict=True)
            if verdict == -1 and (traced or event.HasField("label"))
        ]
        known = self.store.known(wanted) if wanted else {}
        link_current_span((k.trace_id, k.span_id) for k in known.values())
        self._check_retractions(principal, events, judged)
        for i, (event, verdict) in enumerate(zip(events, judged, strict=True)):
            if verdict == -1 and event.HasField("label"):
                decision = known.get(event.request_id, Known())
                try:
                    judged[i] = label_class(event.label, decision, event.request_id)
                except InvalidRequest as exc:
                    judged[i] = exc
        return judged, known

    def _check_retractions(
        self,
        principal: Principal,
        events: Sequence[fpb.FeedbackEvent],
        judged: list[InvalidRequest | PermissionDenied | int],
    ) -> None:
        """Refuse, in judged, each valid RETRACTION whose target is not a label this
        principal recorded about the same request (one look-up for all)."""
        retractions = [
            i
            for i, (event, verdict) in enumerate(zip(events, judged, strict=True))
            if verdict == -1 and event.type == fpb.FEEDBACK_RETRACTION
        ]
        if not retractions:
            return
        stored = self.store.events([events[i].retracts for i in retractions])
        for i in retractions:
            try:
                check_retraction(events[i], principal.name, stored.get(events[i].retracts))
            except InvalidRequest as exc:
                judged[i] = exc

    def _arrived(self, event: fpb.FeedbackEvent, known: Known | None, now: float) -> None:
        """Time a new event's stages: a review's in the queue, and a label's join when
        its decision is here already."""
        stages = review_stages(event) if event.type == fpb.FEEDBACK_REVIEW else []
        if known is not None and known.count and event.HasField("label"):
            stages += join_stages(event.occurred_at, now, known.decided_at, now)
        self._time(event, stages)

    def _joined(self, decided_at: dict[str, float], now: float) -> None:
        """Time the join of the labels that waited for the decisions just kept
        (decided_at: each one's time, by request_id)."""
        if decided_at and self._metrics is not None:
            for label in self.store.labels_about(list(decided_at)):
                event = event_of(label)
                when = decided_at[label.request_id]
                self._time(event, join_stages(event.occurred_at, label.received_at, when, now))

    def _time(self, event: fpb.FeedbackEvent, stages: list[Stage]) -> None:
        if self._metrics is not None:
            kind = type_name(event.type)
            for stage, seconds in stages:
                self._metrics.loop_latency.record(seconds, {"stage": stage, "type": kind})

    def _spend(self, principal: Principal, events: int) -> None:
        if self._limits is not None:
            self._limits.take(principal.name, events)

    def _count(self, event_type: fpb.FeedbackType.ValueType, status: str) -> None:
        if self._metrics is not None:
            known = event_type in fpb.FeedbackType.values()
            name = type_name(event_type) if known else "UNKNOWN"
            self._metrics.events.add(1, {"type": name, "status": status})


def _check(principal: Principal, event: fpb.FeedbackEvent) -> None:
    check_event(event)
    check_type(principal, event.type)
