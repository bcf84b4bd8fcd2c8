"""The Route pipeline with in-memory recorder and audit log, a fake clock and a real
ONNX calibrator: replay, conflicts, refusals, batches, fallbacks, audit records."""

from __future__ import annotations

import asyncio
import functools
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from calibrators.export import to_onnx, write_artefact
from calibrators.methods.temperature import TemperatureScaling
from sidecar.calibration.artefact import ArtefactMetadata
from sidecar.clock import FakeClock
from sidecar.core.decision import Reason
from sidecar.core.policy import Policy, parse_policy
from sidecar.core.request import FloatArray, InputKind, RouteInput
from sidecar.core.thresholds import Tier
from sidecar.errors import EscalationRefused, InvalidRequest, RequestConflict, RequestError
from sidecar.escalation.record import Escalation
from sidecar.escalation.recorder import MemoryRecorder
from sidecar.policy.loader import build_snapshot
from sidecar.policy.snapshot import Snapshot, SnapshotHolder
from sidecar.router import Outcome, Routed, Router, TraceIds
from sidecar.telemetry.audit import InMemoryAudit
from sidecar.telemetry.metrics import RouterMetrics
from tests.artefacts import confident_logits, metadata, policy_doc, temperature_artefact
from tests.unit.review.conftest import points

TRACE = TraceIds("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
AUDIT_FIELDS = {
    "request_id", "model", "model_version", "domain", "input_kind", "logits", "tier", "reason",
    "rule_id", "predicted_class", "predicted_label", "calibrated_confidence", "t_high", "t_low",
    "experiment_arm", "degraded", "policy_revision", "calibration_version", "escalation_id",
    "trace_id", "span_id", "timestamp", "string_attributes", "numeric_attributes", "context",
    "input_ref",
}  # fmt: skip


class RefusingRecorder(MemoryRecorder):
    def record(self, escalation: Escalation) -> int:
        raise EscalationRefused("disk full")


class UnsyncedRecorder(MemoryRecorder):
    """Records, but can never make a record durable (an fsync that fails)."""

    async def durable(self, ticket: int) -> None:
        raise EscalationRefused("spool fsync failed: EIO")


class Breaking:
    """A calibrator whose graph raises or returns NaN at run time."""

    def __init__(self, inner: Any, mode: str) -> None:
        self._inner = inner
        self._mode = mode

    @property
    def metadata(self) -> ArtefactMetadata:
        return self._inner.metadata  # type: ignore[no-any-return]

    def __call__(self, logits: FloatArray) -> FloatArray:
        if self._mode == "raise":
            raise RuntimeError("onnxruntime: kernel failed")
        return np.full(logits.shape, np.nan, dtype=np.float32)


@pytest.fixture
def snapshot(tmp_path: Path) -> Snapshot:
    sha = temperature_artefact(tmp_path / "cal.onnx")
    return build_snapshot(parse_policy(policy_doc(sha)), tmp_path, "test")


class Rig:
    def __init__(self, snapshot: Snapshot | None, sink: Any = None) -> None:
        self.holder = SnapshotHolder()
        if snapshot is not None:
            self.holder.swap(snapshot)
        self.sink = sink or MemoryRecorder()
        self.audit = InMemoryAudit()
        self.clock = FakeClock()
        self.router = Router(self.holder, self.sink, self.audit, None, self.clock, 100, 60.0)

    def route(
        self, request_id: str = "r1", cls: int = 0, strength: float = 8.0, **kw: Any
    ) -> Routed:
        return self.router.decide(request(request_id, cls, strength, **kw), TRACE)


def request(request_id: str = "r1", cls: int = 0, strength: float = 8.0, **kw: Any) -> RouteInput:
    return RouteInput(
        request_id,
        kw.pop("model", "m"),
        np.array(confident_logits(cls, strength), dtype=np.float32),
        **kw,
    )


def test_confident_prediction_is_automated_and_audited(snapshot: Snapshot) -> None:
    """A confident prediction is AUTOMATED, not escalated, and has one full audit record."""
    rig = Rig(snapshot)
    routed = rig.route(cls=2)
    assert routed.decision.tier is Tier.AUTOMATED
    assert routed.decision.predicted_label == "fox"
    assert routed.escalation_id == ""
    assert rig.sink.escalations == []
    (record,) = rig.audit.records
    assert set(record) >= AUDIT_FIELDS
    assert record["trace_id"] == TRACE.trace_id
    assert np.asarray(record["logits"]).tolist() == confident_logits(2)


def test_unsure_prediction_is_escalated_with_context(snapshot: Snapshot) -> None:
    """A low-confidence prediction is escalated before the answer, carrying its context."""
    rig = Rig(snapshot)
    routed = rig.route(strength=0.5, input_ref="s3://x/1", context={"user": "u1"})
    assert routed.decision.tier is Tier.HUMAN_PRIMARY
    (escalation,) = rig.sink.escalations
    assert escalation.escalation_id == routed.escalation_id
    assert (escalation.input_ref, escalation.context, escalation.trace_id) == (
        "s3://x/1",
        {"user": "u1"},
        TRACE.trace_id,
    )


def test_replay_returns_same_decision_without_second_escalation(snapshot: Snapshot) -> None:
    """The same request_id again: the identical answer, one escalation, even after a policy swap."""
    rig = Rig(snapshot)
    first = rig.route(strength=0.5)
    rig.holder.swap(
        Snapshot(_tightened(snapshot.policy), snapshot.calibrators, snapshot.class_counts, "new")
    )
    assert rig.route(strength=0.5) == first
    assert len(rig.sink.escalations) == 1


def _tightened(policy: Policy) -> Policy:
    return Policy(policy.revision + 1, policy.models, policy.issued_at, policy.max_age_seconds)


def test_reused_request_id_with_other_logits_conflicts(snapshot: Snapshot) -> None:
    """A request_id reused for a different prediction is refused, naming request_id."""
    rig = Rig(snapshot)
    rig.route(cls=0)
    with pytest.raises(RequestConflict) as raised:
        rig.route(cls=1)
    assert raised.value.field == "request_id"


def test_replay_window_expires(snapshot: Snapshot) -> None:
    """After the replay ttl the request is decided afresh."""
    rig = Rig(snapshot)
    rig.route(strength=0.5)
    rig.clock.advance(61.0)
    rig.route(strength=0.5)
    assert len(rig.sink.escalations) == 2


def test_a_full_replay_window_gives_the_collector_nothing_to_walk(snapshot: Snapshot) -> None:
    """The window's entries are untracked by the garbage collector, so a full one does
    not lengthen collections (held as objects, 100,000 entries made each full
    collection pause Route for 50 ms and more)."""
    rig = Rig(snapshot)
    rig.router = Router(rig.holder, rig.sink, rig.audit, None, rig.clock, 5000, 60.0)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        rig.route(f"r{i}", cls=i % 3, strength=0.5 + i % 2 * 8.0)  # half escalated
    rig.audit.records.clear()
    rig.sink.escalations.clear()
    gc.collect()  # a collection untracks a tuple whose items are all untracked
    assert len(gc.get_objects()) - before < 100
    assert rig.route("r1", cls=1, strength=8.5).escalation_id == ""  # still remembered


@pytest.mark.parametrize("classes", [3, 300])
def test_a_remembered_request_costs_the_same_memory_whatever_its_class_count(
    tmp_path: Path, classes: int
) -> None:
    """An entry of the replay window is under 512 bytes (its request_id aside), so a
    full default window is about 40 MB. It keeps a hash of the logits, not the
    logits: as bytes they made an entry 590 bytes at 3 classes and 1,800 at 300."""
    artefact = to_onnx(TemperatureScaling(1.0, classes), metadata(classes=classes))
    sha = write_artefact(artefact, tmp_path / "cal.onnx")
    rig = Rig(build_snapshot(parse_policy(policy_doc(sha)), tmp_path, "test"))
    count = 1000
    rig.router = Router(rig.holder, rig.sink, rig.audit, None, rig.clock, count, 60.0)
    rng = np.random.default_rng(0)
    requests = [
        RouteInput(f"r{i}", "m", rng.normal(0.0, 4.0, classes).astype(np.float32))
        for i in range(count)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for item in requests:
            rig.router.decide(item, TRACE)
        rig.audit.records.clear()
        rig.sink.escalations.clear()
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert per_entry < 512
    with pytest.raises(RequestConflict):  # remembered all the same
        rig.router.decide(RouteInput("r7", "m", requests[8].logits), TRACE)


def test_refused_escalation_is_not_remembered(snapshot: Snapshot) -> None:
    """A refused escalation raises, and a retry is decided (and escalated) again."""
    rig = Rig(snapshot, RefusingRecorder())
    with pytest.raises(EscalationRefused):
        rig.route(strength=0.5)
    rig.sink = MemoryRecorder()
    rig.router._recorder = rig.sink
    assert rig.route(strength=0.5).escalation_id
    assert len(rig.sink.escalations) == 1


def test_a_batch_answers_refused_escalations_row_by_row(snapshot: Snapshot) -> None:
    """In a batch, each row whose escalation was refused answers the refusal and is
    neither audited nor remembered; the rows that needed no escalation are answered."""
    rig = Rig(snapshot, RefusingRecorder())
    routed = rig.router.decide_batch([request("a", strength=0.5), request("b", cls=1)], TRACE)
    assert isinstance(routed.result(0), EscalationRefused)
    assert isinstance(routed.result(1), Routed)
    assert [r["request_id"] for r in rig.audit.records] == ["b"]
    rig.router._recorder = rig.sink = MemoryRecorder()
    assert rig.route("a", strength=0.5).escalation_id


def test_route_answers_only_once_the_escalation_is_durable(snapshot: Snapshot) -> None:
    """route() waits for durability itself: an escalation that cannot be made durable
    fails the call, and a batch answers each escalated row with the refusal."""
    rig = Rig(snapshot, UnsyncedRecorder())
    with pytest.raises(EscalationRefused, match="fsync failed"):
        asyncio.run(rig.router.route(request("a", strength=0.5), TRACE))
    assert asyncio.run(rig.router.route(request("b", cls=1), TRACE)).escalation_id == ""
    batch = asyncio.run(
        rig.router.route_batch([request("c", strength=0.5), request("d", cls=1)], TRACE)
    )
    assert isinstance(batch.result(0), EscalationRefused)
    assert isinstance(batch.result(1), Routed)


def test_invalid_request_raises_and_is_not_audited(snapshot: Snapshot) -> None:
    """Validation runs first: nothing is audited or escalated for a bad request."""
    rig = Rig(snapshot)
    with pytest.raises(InvalidRequest, match="model"):
        rig.route(model="nope")
    assert rig.audit.records == []


@pytest.mark.parametrize(
    ("mode", "reason"), [("raise", Reason.FALLBACK_CALIBRATOR), ("nan", Reason.FALLBACK_NON_FINITE)]
)
def test_calibrator_failures_fall_back(snapshot: Snapshot, mode: str, reason: Reason) -> None:
    """A calibrator that raises or returns NaN gives a degraded HUMAN_ASSISTED, escalated."""
    broken = Snapshot(
        snapshot.policy,
        {"m": Breaking(snapshot.calibrators["m"], mode)},
        snapshot.class_counts,
        "x",
    )
    rig = Rig(broken)
    routed = rig.route(cls=1)
    assert (routed.decision.tier, routed.decision.reason, routed.decision.degraded) == (
        Tier.HUMAN_ASSISTED,
        reason,
        True,
    )
    assert len(rig.sink.escalations) == 1


def test_no_policy_answers_with_fallback() -> None:
    """Before any policy: any model and class count get the no-policy fallback."""
    rig = Rig(None)
    routed = rig.router.decide(RouteInput("r", "unknown", np.ones(5, dtype=np.float32)), TRACE)
    assert routed.decision.reason is Reason.FALLBACK_NO_POLICY
    assert routed.decision.tier is Tier.HUMAN_ASSISTED


def test_probabilities_input_matches_logits(snapshot: Snapshot) -> None:
    """Probabilities in give the same calibrated confidence as the logits they came from."""
    rig = Rig(snapshot)
    logits = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    probs = (np.exp(logits) / np.exp(logits).sum()).astype(np.float32)
    a = rig.router.decide(RouteInput("a", "m", logits), TRACE)
    b = rig.router.decide(RouteInput("b", "m", probs, input_kind=InputKind.PROBABILITIES), TRACE)
    assert a.decision.calibrated_confidence == pytest.approx(
        b.decision.calibrated_confidence, abs=1e-5
    )


def test_batch_items_succeed_or_fail_on_their_own(snapshot: Snapshot) -> None:
    """A batch answers per item, in order; bad items name their index; duplicates replay."""
    rig = Rig(snapshot)
    batch = [
        request("a", strength=0.5),
        RouteInput("b", "m", np.zeros(7, dtype=np.float32)),
        request("c", cls=1),
        request("a", strength=0.5),
    ]
    routed = rig.router.decide_batch(batch, TRACE)
    results = [routed.result(i) for i in range(len(batch))]
    assert isinstance(results[0], Routed)
    assert isinstance(results[1], InvalidRequest)
    assert results[1].field == "requests[1].logits"
    assert isinstance(results[2], Routed)
    assert results[2].decision.predicted_label == "dog"
    assert results[3] == results[0]
    assert len(rig.sink.escalations) == 1


def test_outcome_joins_with_decision(snapshot: Snapshot) -> None:
    """RecordOutcome matches a remembered decision and says whether it was right."""
    rig = Rig(snapshot)
    rig.route(cls=2)
    match = rig.router.match_outcome(Outcome("r1", "m", 2, "", "test"))[0]
    assert (match.matched, match.correct) == (True, True)
    assert rig.router.match_outcome(Outcome("r1", "m", None, "cat", "test"))[0].correct is False
    assert rig.router.match_outcome(Outcome("zz", "m", 1, "", "test"))[0].matched is False
    assert rig.audit.records[-1]["event"] == "route.outcome"
    with pytest.raises(InvalidRequest, match="true_class"):
        rig.router.match_outcome(Outcome("r1", "m", None, "", "test"))


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        (Outcome("r" * (2**20), "m", 1, "", "test"), "request_id"),
        (Outcome("r1", "m" * 129, 1, "", "test"), "model"),
        (Outcome("r1", "m", None, "x" * (2**20), "test"), "true_label"),
        (Outcome("r1", "m", 1, "", "s" * 129), "source"),
        (Outcome("r1", "m", 3, "", "test"), "true_class"),  # m has 3 classes
        (Outcome("zz", "m", 999, "", "test"), "true_class"),  # unmatched, still checked
    ],
)
def test_outcomes_are_bounded_before_anything_is_written(
    snapshot: Snapshot, outcome: Outcome, field: str
) -> None:
    """An oversized field or a class the model does not have is refused naming the
    field, and nothing reaches the audit log."""
    rig = Rig(snapshot)
    rig.route(cls=2)
    written = len(rig.audit.records)
    with pytest.raises(InvalidRequest) as raised:
        rig.router.match_outcome(outcome)
    assert raised.value.field == field
    assert len(rig.audit.records) == written


def test_audit_record_reproduces_the_decision(snapshot: Snapshot) -> None:
    """An audit record holds what is needed to re-run its decision on the same snapshot."""
    rig = Rig(snapshot)
    rig.route("x", cls=1, strength=2.2, domain="eu", numeric_attributes={"amount": 3.0})
    record = rig.audit.records[0]
    rerun = (
        Rig(snapshot)
        .router.decide(
            RouteInput(
                record["request_id"],
                record["model"],
                np.array(record["logits"], dtype=np.float32),
                model_version=record["model_version"],
                input_kind=InputKind[record["input_kind"]],
                domain=record["domain"],
                string_attributes=record["string_attributes"],
                numeric_attributes=record["numeric_attributes"],
            ),
            TRACE,
        )
        .decision
    )
    assert (rerun.tier.name, rerun.reason.name, rerun.rule_id) == (
        record["tier"],
        record["reason"],
        record["rule_id"],
    )
    assert (rerun.calibrated_confidence, rerun.predicted_class) == (
        record["calibrated_confidence"],
        record["predicted_class"],
    )
    assert (rerun.t_high, rerun.t_low, rerun.experiment_arm) == (
        record["t_high"],
        record["t_low"],
        record["experiment_arm"],
    )
    assert (rerun.policy_revision, rerun.calibration_version) == (
        record["policy_revision"],
        record["calibration_version"],
    )


@functools.cache
def _rich_snapshot() -> Snapshot:
    """A snapshot with domains, a rule, an experiment and an audit sample (one per run)."""
    directory = Path(tempfile.mkdtemp(prefix="hitl-router-test-"))
    sha = temperature_artefact(directory / "cal.onnx")
    doc = policy_doc(
        sha,
        domains={"eu": {"t_high": 0.95, "t_low": 0.6}},
        rules=[{"id": "big", "when": [{"field": "attributes.amount", "op": "gt", "value": 100}]}],
        experiment={
            "name": "e",
            "unit": "attributes.user",
            "arms": [
                {"name": "a", "weight": 1},
                {"name": "b", "weight": 1, "thresholds": {"t_high": 0.8, "t_low": 0.3}},
            ],
        },
        audit_sample_rate=0.3,
    )
    return build_snapshot(parse_policy(doc), directory, "test")


items = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e", "f"]),  # repeats: replays within a batch
    st.integers(0, 2),
    st.floats(0.0, 6.0),
    st.sampled_from(["", "eu"]),
    st.sampled_from([1.0, 500.0]),
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from([3, 3, 3, 4]),  # 4 classes: refused
)


@given(st.lists(items, min_size=1, max_size=8))
def test_a_batch_answers_as_its_requests_would_one_by_one(
    batch: list[tuple[str, int, float, str, float, str, int]],
) -> None:
    """Every row's answer, escalation and audit record equal those of routing the same
    requests one at a time, in order, on a router of its own."""
    inputs = [
        RouteInput(
            request_id,
            "m",
            np.array(confident_logits(cls, strength) + [0.0] * (size - 3), dtype=np.float32),
            domain=domain,
            numeric_attributes={"amount": amount},
            string_attributes={"user": user},
        )
        for request_id, cls, strength, domain, amount, user, size in batch
    ]
    batched, single = Rig(_rich_snapshot()), Rig(_rich_snapshot())
    routed = batched.router.decide_batch(inputs, TRACE)
    alone: list[object] = []
    for i, request in enumerate(inputs):
        try:
            alone.append(single.router.decide(request, TRACE))
        except InvalidRequest as exc:
            alone.append(exc.at(f"requests[{i}]"))
        except RequestError as exc:
            alone.append(exc)
    for i, expected in enumerate(alone):
        got = routed.result(i)
        if isinstance(expected, Routed):
            assert isinstance(got, Routed)
            assert (got.decision, got.escalation_id) == (expected.decision, expected.escalation_id)
        else:
            assert type(got) is type(expected)
            assert str(got) == str(expected)
    assert batched.sink.escalations == single.sink.escalations
    assert sorted(batched.audit.records, key=repr) == sorted(single.audit.records, key=repr)


# What a resend of a request_id may change: every RouteRequest field is listed, so a
# new field of the contract fails test_every_field_of_route_request_is_classified
# until someone decides whether it can change a decision.
DECISION_INPUTS: dict[str, dict[str, Any]] = {
    "model": {"model": "m2"},
    "model_version": {"model_version": "v2"},
    "input_kind": {"input_kind": InputKind.PROBABILITIES},
    "logits": {"logits": np.array([0.6, 0.3, 0.1], dtype=np.float32)},
    "domain": {"domain": "eu"},
    "string_attributes": {"string_attributes": {"topic": "legal"}},
    "numeric_attributes": {"numeric_attributes": {"amount": 50_000.0}},
}
NOT_DECISION_INPUTS: dict[str, dict[str, Any]] = {
    "input_ref": {"input_ref": "s3://elsewhere"},
    "context": {"context": {"note": "resent"}},
}


@pytest.fixture
def two_models(tmp_path: Path) -> Snapshot:
    sha = temperature_artefact(tmp_path / "cal.onnx")
    doc = policy_doc(sha)
    doc["models"]["m2"] = doc["models"]["m"]
    return build_snapshot(parse_policy(doc), tmp_path, "test")


def _base(**changes: Any) -> RouteInput:
    fields: dict[str, Any] = {
        "request_id": "same-id",
        "model": "m",
        "logits": np.array([0.7, 0.2, 0.1], dtype=np.float32),
        "input_kind": InputKind.LOGITS,
        "string_attributes": {"topic": "billing"},
        "numeric_attributes": {"amount": 10.0},
    }
    fields.update(changes)
    return RouteInput(**fields)


def test_every_field_of_route_request_is_classified() -> None:
    """The lists above name every field of the contract's RouteRequest."""
    from hitl_client.stubs.hitl.v1 import router_pb2

    names = {field.name for field in router_pb2.RouteRequest.DESCRIPTOR.fields}
    assert names == {"request_id", *DECISION_INPUTS, *NOT_DECISION_INPUTS}


@pytest.mark.parametrize("name", sorted(DECISION_INPUTS))
def test_a_resend_that_changes_a_decision_input_conflicts(two_models: Snapshot, name: str) -> None:
    """Changing anything a decision reads is ALREADY_EXISTS, never the old answer."""
    rig = Rig(two_models)
    rig.router.decide(_base(), TRACE)
    with pytest.raises(RequestConflict) as raised:
        rig.router.decide(_base(**DECISION_INPUTS[name]), TRACE)
    assert raised.value.field == "request_id"
    batch = rig.router.decide_batch([_base(**DECISION_INPUTS[name])], TRACE)
    assert isinstance(batch.result(0), RequestConflict)


@pytest.mark.parametrize("name", sorted(NOT_DECISION_INPUTS))
def test_a_resend_that_changes_nothing_decided_is_a_replay(two_models: Snapshot, name: str) -> None:
    """Where the reviewer finds the input, and its context, are not decision inputs."""
    rig = Rig(two_models)
    first = rig.router.decide(_base(), TRACE)
    assert rig.router.decide(_base(**NOT_DECISION_INPUTS[name]), TRACE) == first


def test_negative_zero_is_zero_for_replay(two_models: Snapshot) -> None:
    """-0.0 and 0.0 are one value, in logits and in attributes."""
    rig = Rig(two_models)
    logits = np.array([0.7, 0.0, 0.1], dtype=np.float32)
    first = rig.router.decide(_base(logits=logits, numeric_attributes={"amount": 0.0}), TRACE)
    negative = np.array([0.7, -0.0, 0.1], dtype=np.float32)
    again = _base(logits=negative, numeric_attributes={"amount": -0.0})
    assert rig.router.decide(again, TRACE) == first


@pytest.mark.parametrize("mode", ["reject", "default", "strictest"])
def test_unknown_domains_are_counted_and_get_what_the_policy_says(
    tmp_path: Path, mode: str
) -> None:
    """A domain the model does not name (here 'EU' for 'eu') is counted by model and
    domain, and refused naming the field, given the default thresholds, or the
    strictest, as the policy's unknown_domain says; a named domain is not counted."""
    sha = temperature_artefact(tmp_path / "cal.onnx")
    doc = policy_doc(
        sha,
        domains={"eu": {"t_high": 0.999, "t_low": 0.6}},
        unknown_domain=mode,
    )
    rig = Rig(build_snapshot(parse_policy(doc), tmp_path, "test"))
    reader = InMemoryMetricReader()
    rig.router = Router(
        rig.holder,
        rig.sink,
        rig.audit,
        RouterMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"), rig.holder, time.time),
        rig.clock,
        100,
        60.0,
    )
    rig.route("named", domain="eu", strength=6.0)
    if mode == "reject":
        with pytest.raises(
            InvalidRequest, match=r"unknown domain 'EU' for model 'm' \(known: eu\)"
        ):
            rig.route("typo", domain="EU", strength=6.0)
    else:
        tier = rig.route("typo", domain="EU", strength=6.0).decision.tier
        assert tier is (Tier.AUTOMATED if mode == "default" else Tier.HUMAN_ASSISTED)
    counted = points(reader, "hitl.route.unknown_domains")
    assert counted == {frozenset({("domain", "EU"), ("model", "m")}): 1}


def _drift_snapshot(tmp_path: Path, revision: int = 1, **drift: Any) -> Snapshot:
    sha = temperature_artefact(tmp_path / "cal.onnx")
    section = {"window": 50, "psi_alarm": 0.25, "action": "pause_automation", **drift}
    doc = {**policy_doc(sha, drift=section), "revision": revision}
    return build_snapshot(parse_policy(doc), tmp_path, "test")


def test_the_drift_guard_pauses_automation_once_traffic_leaves_the_reference(
    tmp_path: Path,
) -> None:
    """A full window of one class at high confidence (the reference: 30 % below 0.5,
    classes even) alarms: what would be automated is HUMAN_ASSISTED by FALLBACK_DRIFT,
    escalated, degraded, in the batch path too; traffic like the reference again
    clears it. The gauges show both PSI values and the alarm."""
    rig = Rig(_drift_snapshot(tmp_path))
    reader = InMemoryMetricReader()
    rig.router.guards.export(MeterProvider(metric_readers=[reader]).get_meter("t"))
    for i in range(49):
        assert rig.route(f"a{i}").decision.reason is Reason.THRESHOLD
    paused = rig.route("a49").decision
    assert (paused.tier, paused.reason, paused.degraded) == (
        Tier.HUMAN_ASSISTED,
        Reason.FALLBACK_DRIFT,
        True,
    )
    batch = rig.router.decide_batch([request("b0"), request("b1", cls=1)], TRACE)
    assert [row[1] for row in batch.decisions if row] == [int(Reason.FALLBACK_DRIFT)] * 2
    psi = points(reader, "hitl.drift.psi")
    assert psi[frozenset({("model", "m"), ("of", "class")})] > 1
    assert psi[frozenset({("model", "m"), ("of", "confidence")})] > 1
    shift = points(reader, "hitl.drift.class_shift")[frozenset({("model", "m")})]
    assert shift == pytest.approx(2 / 3, abs=0.05)  # one class of three, against even
    assert points(reader, "hitl.drift.alarmed") == {
        frozenset({("model", "m"), ("action", "pause_automation")}): 1
    }
    for i in range(60):  # like the reference: 3 in 10 unsure, classes even
        rig.route(f"c{i}", cls=i % 3, strength=0.3 if i % 10 < 3 else 8.0)
    assert rig.route("c-last").decision.reason is Reason.THRESHOLD


def test_a_guard_outlives_an_unrelated_revision_and_passes_its_alarm_on(
    tmp_path: Path,
) -> None:
    rig = Rig(_drift_snapshot(tmp_path))
    for i in range(50):
        rig.route(f"a{i}")
    assert rig.route("paused").decision.reason is Reason.FALLBACK_DRIFT
    rig.holder.swap(_drift_snapshot(tmp_path, revision=2))
    assert rig.route("still").decision.reason is Reason.FALLBACK_DRIFT
    rig.holder.swap(_drift_snapshot(tmp_path, revision=3, psi_alarm=0.2))
    assert rig.route("stricter").decision.reason is Reason.FALLBACK_DRIFT  # kept its alarm
    for i in range(50):  # a full window like the reference clears the new guard
        rig.route(f"c{i}", cls=i % 3, strength=0.3 if i % 10 < 3 else 8.0)
    assert rig.route("afresh").decision.reason is Reason.THRESHOLD
