"""The review queue's operations: validation, the store, the clock and telemetry put
together. The gRPC servicer converts proto to these calls and back; tests and
in-process callers use them directly.

Deadlines run from when the queue received an item (``received_at``), not from when
the sidecar decided: forwarding lag is the forwarder's metric, and clocks on
sidecar hosts are not the queue's."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from sidecar.auth import Principal
from sidecar.clock import Clock
from sidecar.errors import InvalidRequest
from sidecar.escalation.record import Escalation
from sidecar.review import validation
from sidecar.review.access import check_method
from sidecar.review.bulk import (
    MAX_LIMIT,
    BulkFilter,
    Reverted,
    bulk_resolution,
    check_reason,
    check_revertible,
)
from sidecar.review.consensus import ConsensusPolicy, is_adjudicated
from sidecar.review.errors import ItemConflict, ItemNotFound
from sidecar.review.item import PRIORITY, TIERS, ItemState, ReviewItem
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.resolution import ReviewerVerdict, Settled, decide, release
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore

log = structlog.get_logger("hitl.review")

EXPORT_PAGE = 500


class SubmitStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"  # already held, the same; nothing changed
    REJECTED = "REJECTED"  # unusable for good; message names the field
    CONFLICT = "CONFLICT"  # the id is held with other content; the stored item stays


@dataclass(frozen=True, slots=True)
class Submitted:
    escalation_id: str
    status: SubmitStatus
    message: str = ""


@dataclass(frozen=True, slots=True)
class BulkAccepted:
    """A bulk accept's batch: the items it resolved (or, dry run, would resolve)."""

    batch_id: str
    items: tuple[ReviewItem, ...]
    dry_run: bool = False


class ReviewQueue:
    def __init__(
        self,
        store: ReviewStore,
        clock: Clock,
        sla: Sla | None = None,
        metrics: ReviewMetrics | None = None,
        *,
        max_claims: int = validation.DEFAULT_MAX_CLAIMS,
        max_lease_seconds: float = validation.DEFAULT_MAX_LEASE_SECONDS,
        consensus: ConsensusPolicy | None = None,
    ) -> None:
        self.store = store
        self.sla = sla or Sla()
        self.consensus = consensus or ConsensusPolicy()
        self._clock = clock
        self._metrics = metrics
        self._max_claims = max_claims
        self._max_lease_seconds = max_lease_seconds

    def submit(self, escalations: Sequence[Escalation]) -> list[Submitted]:
        """Judge each escalation on its own; one answer per escalation, in order.
        InvalidRequest only for an empty batch or one over the limit."""
        validation.check_batch_size(len(escalations))
        now = self._clock.now()
        answers: list[Submitted] = []
        fresh: list[tuple[int, ReviewItem]] = []
        for index, e in enumerate(escalations):
            try:
                validation.check_escalation(e)
            except InvalidRequest as exc:
                answers.append(Submitted(e.escalation_id, SubmitStatus.REJECTED, str(exc)))
                log.warning("review.rejected", escalation_id=e.escalation_id, problem=str(exc))
                continue
            answers.append(Submitted(e.escalation_id, SubmitStatus.ACCEPTED))
            fresh.append((index, self._admit(e, now)))
        stored = self.store.add([item for _, item in fresh])
        for (index, item), new in zip(fresh, stored, strict=True):
            if not new:
                answers[index] = self._resend(item.escalation)
        self._count_submitted(escalations, answers)
        return answers

    def claim(
        self,
        reviewer: str,
        model: str = "",
        lease_seconds: float = 0.0,
        acted_by: str = "",
        lead: bool = False,
    ) -> ReviewItem:
        """Lease the most urgent open item (not one reviewer has answered; one in
        adjudication only when lead: a lead claiming for themselves); ItemNotFound
        when none is open, ItemConflict when the reviewer already holds as many items
        as allowed."""
        validation.check_reviewer(reviewer)
        validation.check_model_filter(model)
        lease = validation.lease_seconds(lease_seconds, self._max_lease_seconds)
        now = self._clock.now()
        held = self.store.held(reviewer, now)
        if held >= self._max_claims:
            raise ItemConflict(
                f"{reviewer} holds {held} items, the most allowed: resolve one, or let a"
                " lease run out, before claiming another"
            )
        item = self.store.claim(reviewer, model, lease, now, lead and not acted_by)
        if item is None:
            raise ItemNotFound("no open item" + (f" of model {model!r}" if model else ""))
        log.info(
            "review.claimed",
            escalation_id=item.escalation_id,
            reviewer=reviewer,
            acted_by=acted_by,
            model=item.escalation.model,
            tier=item.escalation.tier,
            escalation_level=item.escalation_level,
            lease_expires_at=item.lease_expires_at,
        )
        return item

    def resolve(self, answer: ReviewerVerdict) -> ReviewItem:
        """Record a verdict (on an item needing several reviews, one answer: the item
        comes back unresolved until the last); ItemNotFound, ItemConflict (see
        resolution.decide) or InvalidRequest naming the field."""
        validation.check_verdict(answer)
        now = self._clock.now()
        item = self.store.resolve(answer.escalation_id, lambda held: decide(held, answer, now), now)
        resolution = item.resolution
        tier = item.escalation.tier
        if resolution is None:  # one answer of several: reopened, or to adjudication
            self._answered(item, answer)
            return item
        if self._metrics is not None and item.reviews_required > 1:
            outcome = "adjudicated" if is_adjudicated(resolution) else "agreed"
            self._metrics.consensus.add(1, {"outcome": outcome, "tier": tier})
        if self._metrics is not None:
            self._metrics.resolved.add(1, {"verdict": resolution.verdict.value, "tier": tier})
            self._metrics.time_to_label.record(resolution.time_to_label_seconds, {"tier": tier})
        log.info(
            "review.resolved",
            escalation_id=item.escalation_id,
            reviewer=resolution.reviewer,
            acted_by=resolution.acted_by,
            verdict=resolution.verdict.value,
            label_class=resolution.label_class,
            time_to_label_seconds=resolution.time_to_label_seconds,
            agreement=resolution.agreement,
            trace_id=item.escalation.trace_id,
        )
        return item

    def _answered(self, item: ReviewItem, answer: ReviewerVerdict) -> None:
        tier = item.escalation.tier
        adjudication = item.state is ItemState.ADJUDICATION
        if self._metrics is not None and adjudication:
            self._metrics.consensus.add(1, {"outcome": "adjudication", "tier": tier})
        log.info(
            "review.to_adjudication" if adjudication else "review.answered",
            escalation_id=item.escalation_id,
            reviewer=answer.reviewer,
            acted_by=answer.acted_by,
            answered=item.answered,
            reviews_required=item.reviews_required,
            trace_id=item.escalation.trace_id,
        )

    def release(self, escalation_id: str, reviewer: str, acted_by: str = "") -> ReviewItem:
        """Give back an item reviewer holds, unresolved (a skip): its claim ends now and
        it is open for anyone. ItemNotFound, or ItemConflict when reviewer does not
        hold it (see resolution.release)."""
        validation.check_escalation_id(escalation_id)
        validation.check_reviewer(reviewer)
        now = self._clock.now()
        item = self.store.release(escalation_id, lambda held: release(held, reviewer), now)
        log.info(
            "review.released",
            escalation_id=escalation_id,
            reviewer=reviewer,
            acted_by=acted_by,
            model=item.escalation.model,
            tier=item.escalation.tier,
        )
        return item

    def bulk_accept(
        self, principal: Principal, wanted: BulkFilter, dry_run: bool = False
    ) -> BulkAccepted:
        """A lead's accept of every open item ``wanted`` takes (most urgent first, up
        to its limit; the candidates are the MAX_LIMIT most urgent open items of the
        model and tier), each resolved on its own as the lead's ACCEPT in one new
        batch. An item claimed or answered between listing and accepting is skipped.
        Dry run: the items it would accept, nothing changed. PermissionDenied unless
        a lead; InvalidRequest naming the field."""
        check_method(principal, "BulkAccept")
        wanted.check()
        if wanted.tier:
            validation.check_tier_filter(wanted.tier)
        now = self._clock.now()
        listed = self.store.items(ItemState.OPEN, wanted.model, wanted.tier, MAX_LIMIT, now)
        chosen = [item for item in listed if wanted.takes(item)][: wanted.count]
        batch_id = f"bulk-{uuid.uuid4().hex[:12]}"
        if dry_run:
            return BulkAccepted(batch_id, tuple(chosen), dry_run=True)
        accepted: list[ReviewItem] = []
        for item in chosen:
            try:
                accepted.append(
                    self.store.resolve(
                        item.escalation_id,
                        lambda held: Settled(
                            None, bulk_resolution(held, principal.name, batch_id, wanted, now)
                        ),
                        now,
                    )
                )
            except ItemConflict:
                continue  # claimed or answered since it was listed: left to its reviewer
        for item in accepted:
            if self._metrics is not None:
                self._metrics.resolved.add(1, {"verdict": "ACCEPT", "tier": item.escalation.tier})
        log.info(
            "review.bulk_accepted",
            batch_id=batch_id,
            lead=principal.name,
            model=wanted.model,
            rule_id=wanted.rule_id,
            tier=wanted.tier,
            min_confidence=wanted.min_confidence,
            accepted=len(accepted),
            escalation_ids=[item.escalation_id for item in accepted],
        )
        return BulkAccepted(batch_id, tuple(accepted))

    def revert(self, principal: Principal, escalation_id: str, reason: str) -> ReviewItem:
        """A lead takes back one resolution: the item is OPEN again, unresolved, and
        the resolution is kept in its revert history with who, when and why. The
        outbox retracts it at the feedback service if the service had it, and sends
        the item's next resolution under a new feedback_id (``outbox``).
        PermissionDenied unless a lead; InvalidRequest naming the field
        (escalation_id when the item is not resolved); ItemNotFound."""
        check_method(principal, "Revert")
        validation.check_escalation_id(escalation_id)
        check_reason(reason)
        now = self._clock.now()
        item = self.store.revert(escalation_id, check_revertible, principal.name, reason, now)
        log.info(
            "review.reverted",
            escalation_id=escalation_id,
            reverted_by=principal.name,
            reason=reason,
            model=item.escalation.model,
            trace_id=item.escalation.trace_id,
        )
        return item

    def reverts(self, escalation_id: str) -> list[Reverted]:
        """The item's reverted resolutions, oldest first."""
        validation.check_escalation_id(escalation_id)
        return self.store.reverts(escalation_id)

    def get(self, escalation_id: str) -> ReviewItem:
        """The item as of now; ItemNotFound when there is none."""
        validation.check_escalation_id(escalation_id)
        item = self.store.item(escalation_id, self._clock.now())
        if item is None:
            raise ItemNotFound(f"escalation_id {escalation_id!r}: no such item")
        return item

    def now(self) -> float:
        """The queue's clock (what deadlines and leases are measured by)."""
        return self._clock.now()

    def list_items(
        self, state: ItemState | None = None, model: str = "", tier: str = "", limit: int = 0
    ) -> list[ReviewItem]:
        validation.check_model_filter(model)
        validation.check_tier_filter(tier)
        count = validation.list_limit(limit)
        return self.store.items(state, model, tier, count, self._clock.now())

    def export(self, model: str = "", since: float = 0.0) -> Iterator[ReviewItem]:
        """Resolved items, oldest resolution first, read a page at a time. Arguments
        are checked now, before the first item is asked for."""
        validation.check_model_filter(model)
        validation.check_since(since)
        return self._pages(model, since)

    def sweep(self) -> list[ReviewItem]:
        """Raise every overdue unresolved item one escalation level (a new deadline of
        now plus its tier's SLA), count and log each, and refresh the item gauge."""
        now = self._clock.now()
        raised = self.store.raise_overdue(self.sla, now)
        for item in raised:
            e = item.escalation
            if self._metrics is not None:
                self._metrics.overdue.add(1, {"tier": e.tier})
            log.warning(
                "review.overdue",
                escalation_id=e.escalation_id,
                model=e.model,
                tier=e.tier,
                # Not "level": the log renderer's own key for the log level.
                escalation_level=item.escalation_level,
                trace_id=e.trace_id,
                due_at=item.due_at,
            )
        if self._metrics is not None:
            self._metrics.refresh(self.store.counts(now))
        return raised

    def _resend(self, e: Escalation) -> Submitted:
        """DUPLICATE when the held escalation is this one; CONFLICT, logged and
        counted, when the id is held with other content (a forgery, or a bug)."""
        held = self.store.item(e.escalation_id, self._clock.now())
        if held is not None and _same(held.escalation, e):
            return Submitted(e.escalation_id, SubmitStatus.DUPLICATE)
        log.error(
            "review.conflicting_submission",
            escalation_id=e.escalation_id,
            model=e.model,
            request_id=e.request_id,
        )
        return Submitted(
            e.escalation_id,
            SubmitStatus.CONFLICT,
            "escalation_id is held with other content; the stored escalation stays",
        )

    def _admit(self, e: Escalation, now: float) -> ReviewItem:
        required = self.consensus.requirement(e.tier, e.rule_id)
        return ReviewItem(
            reviews_required=required.reviews,
            consensus=required.agreement,
            escalation=e,
            state=ItemState.OPEN,
            priority=PRIORITY[e.tier],
            due_at=self.sla.due_at(e.tier, now),
            escalation_level=0,
            received_at=now,
        )

    def _pages(self, model: str, since: float) -> Iterator[ReviewItem]:
        after: tuple[float, str] | None = None
        while page := self.store.resolved(model, since, after, EXPORT_PAGE, self._clock.now()):
            yield from page
            last = page[-1]
            assert last.resolution is not None  # pages hold resolved items only
            after = (last.resolution.resolved_at, last.escalation_id)

    def _count_submitted(
        self, escalations: Sequence[Escalation], answers: Sequence[Submitted]
    ) -> None:
        if self._metrics is None:
            return
        for e, answer in zip(escalations, answers, strict=True):
            tier = e.tier if e.tier in TIERS else "unknown"
            self._metrics.submitted.add(1, {"result": answer.status.value.lower(), "tier": tier})


def _same(a: Escalation, b: Escalation) -> bool:
    """Equal content (as JSON, so a fallback's NaN confidence equals itself). Labels
    count only when both carry them: the forwarder adds them as it sends, so a resend
    after the policy revision changed comes without them, and is still a resend."""
    first, second = a.to_dict(), b.to_dict()
    if not (first["labels"] and second["labels"]):
        first.pop("labels")
        second.pop("labels")
    return json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
