"""The review queue's semantics, each on SQLite and on PostgreSQL: idempotent Submit,
per-item rejection, claim order, leases, resolve preconditions, the overdue sweep,
List, Export, and concurrent claims from several replicas."""

from __future__ import annotations

import math
import threading
from collections import Counter

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from structlog.testing import capture_logs

from sidecar.clock import FakeClock
from sidecar.errors import InvalidRequest
from sidecar.review import queue as queue_module
from sidecar.review.errors import ItemConflict, ItemNotFound
from sidecar.review.item import ItemState, Verdict
from sidecar.review.queue import ReviewQueue, SubmitStatus
from sidecar.review.resolution import ReviewerVerdict
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore
from tests.escalations import escalation
from tests.unit.review.conftest import OpenStore, points

ACCEPTED, DUPLICATE, REJECTED, CONFLICT = SubmitStatus


def accept(escalation_id: str, reviewer: str = "alice", **kw: object) -> ReviewerVerdict:
    return ReviewerVerdict(escalation_id, reviewer, Verdict.ACCEPT, **kw)  # type: ignore[arg-type]


def test_submit_is_idempotent_by_escalation_id(
    queue: ReviewQueue, reader: InMemoryMetricReader
) -> None:
    """A resend of the same escalation is DUPLICATE and changes nothing; another with
    the same escalation_id but other content is CONFLICT, logged and counted, and the
    stored one stays (a forgery cannot pass for a duplicate)."""
    first = queue.submit([escalation("e1")])
    again = queue.submit([escalation("e1")])
    with capture_logs() as logs:
        forged = queue.submit([escalation("e1", model="other", tier="HUMAN_PRIMARY")])
    assert [r.status for r in first + again + forged] == [ACCEPTED, DUPLICATE, CONFLICT]
    assert "other content" in forged[0].message
    assert [e["event"] for e in logs] == ["review.conflicting_submission"]
    (item,) = queue.list_items()
    assert item.escalation == escalation("e1")
    assert (item.state, item.priority, item.escalation_level) == (ItemState.OPEN, 1, 0)
    submitted = points(reader, "hitl.review.submitted")
    assert submitted[frozenset({("result", "conflict"), ("tier", "HUMAN_PRIMARY")})] == 1


def test_a_resend_without_its_labels_is_a_duplicate(queue: ReviewQueue) -> None:
    """The forwarder adds labels as it sends: a resend after the policy revision changed
    comes without them and is DUPLICATE (the stored labels stay); other labels conflict."""
    labelled = escalation("e1", labels=["a", "b", "c"])
    first = queue.submit([labelled])
    again = queue.submit([escalation("e1")])
    relabelled = queue.submit([escalation("e1", labels=["x", "y", "z"])])
    assert [r.status for r in first + again + relabelled] == [ACCEPTED, DUPLICATE, CONFLICT]
    assert queue.get("e1").escalation.labels == ["a", "b", "c"]


def test_duplicates_within_one_batch_store_the_first(queue: ReviewQueue) -> None:
    """The same escalation twice in one batch: ACCEPTED, then DUPLICATE; the same id
    with other content: CONFLICT."""
    results = queue.submit([escalation("e1"), escalation("e1"), escalation("e1", model="x")])
    assert [r.status for r in results] == [ACCEPTED, DUPLICATE, CONFLICT]
    assert [i.escalation.model for i in queue.list_items()] == ["m"]


def test_invalid_items_are_rejected_alone(queue: ReviewQueue, reader: InMemoryMetricReader) -> None:
    """Each bad item is REJECTED naming its field, with the sidecar's own bounds on what
    a Route may carry (no 1 MiB ids, 3 MiB contexts or 100,000 logits) and a decision
    that holds together; the valid ones in the batch are stored."""
    batch = [
        escalation("ok-1"),
        escalation(""),
        escalation("no-model", model=""),
        escalation("no-tier", tier=""),
        escalation("odd-tier", tier="7"),
        escalation("nan", logits=[0.1, math.nan, 0.2]),
        escalation("odd-kind", input_kind="3"),
        escalation("inf", numeric_attributes={"amount": math.inf}),
        escalation("x" * 129),
        escalation("big-context", context={"note": "x" * (3 * 2**20)}),
        escalation("many-logits", logits=[0.0] * 100_000),
        escalation("no-logits", logits=[]),
        escalation("class-out", predicted_class=3),
        escalation("automated", tier="AUTOMATED", reason="THRESHOLD"),
        escalation("long-ref", input_ref="s3://" + "x" * 4096),
        escalation("few-labels", labels=["a", "b"]),
        escalation("twice", labels=["a", "b", "a"]),
        escalation("empty-label", labels=["a", "", "c"]),
        escalation("long-label", labels=["a", "b", "c" * 1025]),
        escalation("ok-2", tier="HUMAN_PRIMARY", labels=["a", "b", "c"]),
    ]
    results = queue.submit(batch)
    assert [r.status for r in results] == [ACCEPTED] + [REJECTED] * 18 + [ACCEPTED]
    fields = [r.message.split(":")[0] for r in results if r.status is REJECTED]
    assert fields == [
        "escalation_id",
        "model",
        "tier",
        "tier",
        "logits",
        "input_kind",
        "numeric_attributes['amount']",
        "escalation_id",
        "context",
        "logits",
        "logits",
        "predicted_class",
        "reason",
        "input_ref",
        "labels",
        "labels",
        "labels",
        "labels",
    ]
    assert sorted(i.escalation_id for i in queue.list_items()) == ["ok-1", "ok-2"]
    assert queue.get("ok-2").escalation.labels == ["a", "b", "c"]
    submitted = points(reader, "hitl.review.submitted")
    assert submitted[frozenset({("result", "rejected"), ("tier", "unknown")})] == 2
    assert submitted[frozenset({("result", "rejected"), ("tier", "AUTOMATED")})] == 1
    assert submitted[frozenset({("result", "accepted"), ("tier", "HUMAN_PRIMARY")})] == 1


@pytest.mark.parametrize("size", [0, 1001])
def test_empty_or_oversized_batch_is_invalid(queue: ReviewQueue, size: int) -> None:
    """No escalations, or more than 1000: InvalidRequest naming escalations; nothing stored."""
    with pytest.raises(InvalidRequest) as raised:
        queue.submit([escalation(f"e{i}") for i in range(size)])
    assert raised.value.field == "escalations"
    assert queue.list_items() == []


def test_claim_order(store: ReviewStore, clock: FakeClock) -> None:
    """Highest escalation level first, then priority (primary, assisted, audit), then due_at."""
    sla = Sla({"HUMAN_PRIMARY": 900.0, "HUMAN_ASSISTED": 7200.0, "AUTOMATED": 10.0})
    queue = ReviewQueue(store, clock, sla)
    queue.submit([escalation("audit-overdue", tier="AUTOMATED")])
    clock.advance(11)
    assert [i.escalation_id for i in queue.sweep()] == ["audit-overdue"]
    queue.submit([escalation("assisted-early")])
    clock.advance(1)
    queue.submit(
        [
            escalation("audit", tier="AUTOMATED"),
            escalation("assisted-late"),
            escalation("primary", tier="HUMAN_PRIMARY"),
        ]
    )
    claimed = [queue.claim("alice").escalation_id for _ in range(5)]
    assert claimed == ["audit-overdue", "primary", "assisted-early", "assisted-late", "audit"]
    with pytest.raises(ItemNotFound, match="no open item"):
        queue.claim("alice")


def test_claim_by_model(queue: ReviewQueue) -> None:
    """A model filter claims only that model's items; none left is ItemNotFound naming it."""
    queue.submit([escalation("e1", model="fraud", tier="HUMAN_PRIMARY"), escalation("e2")])
    assert queue.claim("alice", model="m").escalation_id == "e2"
    with pytest.raises(ItemNotFound, match="'m'"):
        queue.claim("alice", model="m")


def test_expired_lease_returns_the_item_to_the_queue(queue: ReviewQueue, clock: FakeClock) -> None:
    """Nobody else gets a leased item; once its lease runs out the next claimer does."""
    queue.submit([escalation("e1")])
    held = queue.claim("alice", lease_seconds=60)
    assert (held.state, held.claimed_by, held.lease_expires_at) == (
        ItemState.CLAIMED,
        "alice",
        clock.now() + 60,
    )
    with pytest.raises(ItemNotFound):
        queue.claim("bob")
    clock.advance(60)
    assert [i.state for i in queue.list_items()] == [ItemState.OPEN]
    taken = queue.claim("bob")
    assert (taken.escalation_id, taken.claimed_by) == ("e1", "bob")
    with pytest.raises(ItemConflict, match="claimed by 'bob', not 'alice'"):
        queue.resolve(accept("e1", "alice"))


def test_holder_of_an_expired_lease_may_still_resolve(queue: ReviewQueue, clock: FakeClock) -> None:
    """Lease expired, nobody else claimed: the original reviewer's verdict is recorded,
    with the claim-to-resolve time."""
    queue.submit([escalation("e1")])
    queue.claim("alice", lease_seconds=60)
    clock.advance(120)
    resolved = queue.resolve(accept("e1"))
    assert resolved.state is ItemState.RESOLVED
    assert resolved.resolution is not None
    assert resolved.resolution.time_to_label_seconds == 120
    assert resolved.resolution.resolved_at == clock.now()


def test_resolve_preconditions(queue: ReviewQueue) -> None:
    """Unknown id: ItemNotFound. Never claimed, held by another, already resolved: ItemConflict."""
    queue.submit([escalation("e1"), escalation("e2")])
    with pytest.raises(ItemNotFound, match="'nope'"):
        queue.resolve(accept("nope"))
    with pytest.raises(ItemConflict, match="not claimed"):
        queue.resolve(accept("e1"))
    queue.claim("alice")
    with pytest.raises(ItemConflict, match="claimed by 'alice', not 'bob'"):
        queue.resolve(accept("e1", "bob"))
    queue.resolve(accept("e1"))
    with pytest.raises(ItemConflict, match="already resolved by 'alice'"):
        queue.resolve(accept("e1"))
    assert [(i.escalation_id, i.state) for i in queue.list_items()] == [
        ("e2", ItemState.OPEN),
        ("e1", ItemState.RESOLVED),
    ]


def test_verdicts_record_the_true_label(queue: ReviewQueue, clock: FakeClock) -> None:
    """ACCEPT takes the predicted class and label; OVERRIDE the reviewer's class and
    label; the tool's time to label wins over the queue's."""
    queue.submit([escalation(f"e{i}") for i in range(3)])
    for _ in range(3):
        queue.claim("alice")
    clock.advance(30)
    accepted = queue.resolve(accept("e0", rationale="clear case"))
    by_class = queue.resolve(
        ReviewerVerdict("e1", "alice", Verdict.OVERRIDE, corrected_class=2, corrected_label="c")
    )
    by_label = queue.resolve(
        ReviewerVerdict(
            "e2",
            "alice",
            Verdict.OVERRIDE,
            corrected_class=0,
            corrected_label="z",
            time_to_label_seconds=4.5,
        )
    )
    labels = [
        (r.verdict, r.label_class, r.label, r.time_to_label_seconds)
        for r in (accepted.resolution, by_class.resolution, by_label.resolution)
        if r is not None
    ]
    assert labels == [
        (Verdict.ACCEPT, 1, "b", 30.0),
        (Verdict.OVERRIDE, 2, "c", 30.0),
        (Verdict.OVERRIDE, 0, "z", 4.5),
    ]
    assert accepted.resolution is not None
    assert accepted.resolution.rationale == "clear case"


def test_resolve_metrics(
    queue: ReviewQueue, clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    """Resolutions are counted by verdict and tier; time to label goes to the histogram."""
    queue.submit([escalation("e1", tier="HUMAN_PRIMARY")])
    queue.claim("alice")
    clock.advance(42)
    queue.resolve(accept("e1"))
    resolved = points(reader, "hitl.review.resolved")
    assert resolved == {frozenset({("verdict", "ACCEPT"), ("tier", "HUMAN_PRIMARY")}): 1}
    (histogram,) = points(reader, "hitl.review.time_to_label").values()
    assert (histogram.count, histogram.sum) == (1, 42.0)


def test_overdue_sweep_raises_the_level(
    queue: ReviewQueue, clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    """Past its deadline unresolved (claimed or not): level + 1, a new deadline of now
    plus its tier's SLA, counted and logged with its trace id; resolved items never."""
    queue.submit(
        [
            escalation("primary", tier="HUMAN_PRIMARY"),
            escalation("assisted"),
            escalation("done", tier="HUMAN_PRIMARY"),
        ]
    )
    assert queue.claim("alice").escalation_id == "done"
    assert queue.claim("bob").escalation_id == "primary"  # still held when it is overdue
    queue.resolve(accept("done", "alice"))
    clock.advance(899)
    assert queue.sweep() == []
    clock.advance(1)
    with capture_logs() as logs:
        raised = queue.sweep()
    assert [(i.escalation_id, i.escalation_level, i.due_at) for i in raised] == [
        ("primary", 1, clock.now() + 900)
    ]
    assert [e for e in logs if e["event"] == "review.overdue"] == [
        {
            "event": "review.overdue",
            "log_level": "warning",
            "escalation_id": "primary",
            "model": "m",
            "tier": "HUMAN_PRIMARY",
            "escalation_level": 1,
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "due_at": clock.now() + 900,
        }
    ]
    clock.advance(7200 - 900)
    assert [(i.escalation_id, i.escalation_level) for i in queue.sweep()] == [
        ("primary", 2),
        ("assisted", 1),
    ]
    overdue = points(reader, "hitl.review.overdue")
    assert overdue == {
        frozenset({("tier", "HUMAN_PRIMARY")}): 2,
        frozenset({("tier", "HUMAN_ASSISTED")}): 1,
    }


def test_sweep_refreshes_the_items_gauge(queue: ReviewQueue, reader: InMemoryMetricReader) -> None:
    """Open and claimed items by tier, every tier reported (0 when none)."""
    queue.submit([escalation("a"), escalation("b"), escalation("c", tier="AUTOMATED")])
    queue.claim("alice")
    queue.sweep()
    items = points(reader, "hitl.review.items")
    assert items[frozenset({("state", "open"), ("tier", "HUMAN_ASSISTED")})] == 1
    assert items[frozenset({("state", "claimed"), ("tier", "HUMAN_ASSISTED")})] == 1
    assert items[frozenset({("state", "open"), ("tier", "AUTOMATED")})] == 1
    assert items[frozenset({("state", "open"), ("tier", "HUMAN_PRIMARY")})] == 0
    assert len(items) == 6


def test_list_filters_and_limit(queue: ReviewQueue, clock: FakeClock) -> None:
    """State (as of now), model and tier filter; limit cuts the most urgent first."""
    queue.submit(
        [
            escalation("p1", tier="HUMAN_PRIMARY"),
            escalation("a1"),
            escalation("f1", model="fraud"),
            escalation("x1", tier="AUTOMATED"),
        ]
    )
    queue.claim("alice", lease_seconds=10)  # p1
    queue.claim("alice")  # a1

    def ids(**kw: object) -> list[str]:
        return [i.escalation_id for i in queue.list_items(**kw)]  # type: ignore[arg-type]

    assert ids() == ["p1", "a1", "f1", "x1"]
    assert ids(state=ItemState.OPEN) == ["f1", "x1"]
    assert ids(state=ItemState.CLAIMED) == ["p1", "a1"]
    assert ids(model="fraud") == ["f1"]
    assert ids(tier="AUTOMATED") == ["x1"]
    assert ids(limit=2) == ["p1", "a1"]
    clock.advance(10)
    assert ids(state=ItemState.OPEN) == ["p1", "f1", "x1"]
    with pytest.raises(InvalidRequest, match="limit"):
        queue.list_items(limit=1001)


def test_export_oldest_resolution_first(
    queue: ReviewQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved items only, oldest resolution first (ties by id), across pages; the
    model and resolved_since filters apply."""
    monkeypatch.setattr(queue_module, "EXPORT_PAGE", 2)
    ids = ["r3", "r1", "r2", "f1", "r4", "open"]
    queue.submit([escalation(i, model="fraud" if i == "f1" else "m") for i in ids])
    for _ in ids:
        queue.claim("alice")
    start = clock.now()
    for escalation_id in ["r3", "r1", "r2"]:  # one tie at start + 1 (r1, r2)
        if escalation_id != "r2":
            clock.advance(1)
        queue.resolve(accept(escalation_id))
    clock.advance(1)
    queue.resolve(accept("f1"))
    clock.advance(1)
    queue.resolve(accept("r4"))
    exported = [i.escalation_id for i in queue.export()]
    assert exported == ["r3", "r1", "r2", "f1", "r4"]
    assert [i.escalation_id for i in queue.export(model="m")] == ["r3", "r1", "r2", "r4"]
    assert [i.escalation_id for i in queue.export(since=start + 2)] == ["r1", "r2", "f1", "r4"]
    assert list(queue.export(model="nobody")) == []


def test_export_checks_its_arguments_before_streaming(queue: ReviewQueue) -> None:
    """A bad resolved_since is refused at the call, not at the first item."""
    with pytest.raises(InvalidRequest, match="resolved_since"):
        queue.export(since=-1.0)


def test_items_survive_reopening(open_store: OpenStore, clock: FakeClock) -> None:
    """What one store acknowledged, a store opened later on the same database holds."""
    first = ReviewQueue(open_store(), clock)
    first.submit([escalation("e1"), escalation("e2")])
    first.claim("alice")
    first.store.close()
    again = ReviewQueue(open_store(), clock)
    assert [(i.escalation_id, i.state) for i in again.list_items()] == [
        ("e1", ItemState.CLAIMED),
        ("e2", ItemState.OPEN),
    ]
    assert again.submit([escalation("e1")])[0].status is DUPLICATE


def test_concurrent_claims_never_share_an_item(open_store: OpenStore, clock: FakeClock) -> None:
    """Eight reviewers on two replicas of one database claim 60 items at once: each
    item goes to exactly one of them, and all of them are claimed."""
    replicas = [ReviewQueue(open_store(), clock, max_claims=60) for _ in range(2)]
    replicas[0].submit([escalation(f"e{i:02d}") for i in range(60)])
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def reviewer(number: int) -> None:
        queue = replicas[number % 2]
        start.wait()
        while True:
            try:
                item = queue.claim(f"reviewer-{number}")
            except ItemNotFound:
                return
            with lock:
                claimed.append((item.escalation_id, item.claimed_by))

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(escalation_id for escalation_id, _ in claimed)
    assert sorted(counts) == [f"e{i:02d}" for i in range(60)]
    assert set(counts.values()) == {1}
    holders = {i.escalation_id: i.claimed_by for i in replicas[1].list_items()}
    assert holders == dict(claimed)


def test_fallback_escalations_are_taken_and_need_an_override(queue: ReviewQueue) -> None:
    """A degraded decision has no predicted class (-1): stored, ACCEPT refused naming
    verdict, OVERRIDE with the class labels it."""
    fallback = escalation(
        "f1", predicted_class=-1, predicted_label="", calibrated_confidence=0.0,
        reason="FALLBACK_NO_POLICY", degraded=True,
    )  # fmt: skip
    assert [r.status for r in queue.submit([fallback])] == [ACCEPTED]
    queue.claim("alice")
    with pytest.raises(InvalidRequest) as raised:
        queue.resolve(accept("f1"))
    assert raised.value.field == "verdict"
    resolved = queue.resolve(ReviewerVerdict("f1", "alice", Verdict.OVERRIDE, corrected_class=0))
    assert resolved.resolution is not None
    assert resolved.resolution.label_class == 0


def test_release_gives_the_item_back_at_once(queue: ReviewQueue, clock: FakeClock) -> None:
    """A released item is open and held by nobody: the next claim (anyone's) takes it,
    the releaser's held count drops, and the releaser can no longer resolve it."""
    queue.submit([escalation("e1")])
    queue.claim("alice", lease_seconds=600)
    with capture_logs() as logs:
        released = queue.release("e1", "alice")
    assert (released.state, released.claimed_by, released.lease_expires_at) == (
        ItemState.OPEN,
        "",
        0.0,
    )
    assert [e["event"] for e in logs] == ["review.released"]
    assert queue.store.held("alice", clock.now()) == 0
    with pytest.raises(ItemConflict, match="not claimed"):
        queue.resolve(accept("e1"))
    assert queue.claim("bob").escalation_id == "e1"
    with pytest.raises(ItemConflict, match="claimed by 'bob', not 'alice'"):
        queue.release("e1", "alice")
    with pytest.raises(ItemNotFound):
        queue.release("e9", "alice")
    with pytest.raises(InvalidRequest, match="escalation_id"):
        queue.release("", "alice")


def test_the_evidence_is_kept_and_exported(queue: ReviewQueue) -> None:
    """A verdict's evidence is stored with its resolution and read back by List and Export."""
    queue.submit([escalation("e1")])
    queue.claim("alice")
    shown = '{"input_ref": "s3://inputs/e1", "rendered": false}'
    queue.resolve(accept("e1", evidence=shown))
    (listed,) = queue.list_items(ItemState.RESOLVED)
    (exported,) = queue.export()
    assert listed.resolution is not None
    assert exported.resolution is not None
    assert listed.resolution.evidence == exported.resolution.evidence == shown
