"""The calibration monitor against a real registry and a real feedback log: a breach
is answered by a tightening the registry applies at once (the monitor's principal is
an operator), with the evidence in the revision's reason; it is not answered twice;
a registry that cannot be reached is a counted, retried failure, never a dead task."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from monitor.app import build
from monitor.checks import MODEL, Limits
from monitor.config import MonitorConfig
from monitor.service import Monitor
from sidecar.clock import SystemClock
from sidecar.errors import ConfigError
from sidecar.feedback.records import decided, received
from sidecar.feedback.store import FeedbackStore, open_store
from sidecar.registry.messages import document_from_policy, policy_from_document
from tests.registry import Registry, in_process, registry_policy, upload_artefact
from tests.unit.feedback.test_validation import decision, event

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with in_process("sqlite", tmp_path) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    opened = open_store(f"sqlite:{tmp_path / 'feedback.db'}")
    yield opened
    opened.close()


def first_policy(registry: Registry, tmp_path: Path) -> None:
    sha = upload_artefact(registry, tmp_path / "cal.onnx")
    doc = registry_policy(sha, target_tier1_accuracy=0.99, labels=["cat", "dog", "fox"])
    with registry.client("alice") as alice, registry.client("bob") as bob:
        proposal = alice.propose(policy_from_document(doc), "first policy", 0)
        bob.approve(proposal.id, "looks right")


def audited(
    store: FeedbackStore,
    n: int,
    accuracy: float,
    arm: str = "",
    prefix: str = "r",
    revision: int = 1,
) -> None:
    """n automated decisions drawn into the audit sample, each reviewed: right for
    the first accuracy * n of them."""
    now = time.time()
    records, labels = [], []
    for i in range(n):
        request_id = f"{prefix}-{i}"
        record = decision(
            request_id=request_id,
            model="m",
            reason=dpb.REASON_AUDIT_SAMPLE,
            predicted_class=1,
            predicted_label="dog",
            labels=["cat", "dog", "fox"],
            calibrated_confidence=0.97,
            decided_at=now - 60,
            experiment_arm=arm,
            policy_revision=revision,
        )
        records.append(decided(record, "sidecar-1", now - 59))
        label = fpb.Label(class_index=1 if i < accuracy * n else 2)
        review = event(feedback_id=f"f-{request_id}", request_id=request_id, model="m", label=label)
        review.type = fpb.FEEDBACK_REVIEW
        labels.append(received(review, "queue", now - 30))
    store.add_decisions(records)
    store.add(labels)


def test_a_breach_is_tightened_through_the_registry_with_its_evidence(
    registry: Registry, store: FeedbackStore, tmp_path: Path
) -> None:
    first_policy(registry, tmp_path)
    audited(store, 400, accuracy=0.95)
    with registry.client("alice") as alice, registry.client("vic") as viewer:
        monitor = Monitor(store, alice, SystemClock(), 3600.0, Limits())
        (applied,) = monitor.check()
        assert (applied.breach.kind, applied.revision) == ("tier1_accuracy", 2)
        head = viewer.get_policy(0)
        assert head.revision == 2
        assert head.proposed_by == "alice"
        assert head.approved_by == ""  # a tightening: applied at once
        doc = document_from_policy(head.policy)
        assert doc["models"]["m"]["thresholds"]["paused"] is True
        summary, _, evidence = head.reason.partition("; evidence ")
        assert summary.startswith("calibration monitor: m model: Tier-1 accuracy 0.9500")
        facts = json.loads(evidence)
        assert facts["breach"] == "tier1_accuracy"
        assert facts["target"] == 0.99
        assert facts["labelled"] == 400
        assert facts["interval"][1] < 0.99
        assert monitor.check() == []  # already paused: nothing more to do
        assert viewer.get_policy(0).revision == 2


def test_a_pause_an_approver_lifts_is_not_overruled_by_the_old_evidence(
    registry: Registry, store: FeedbackStore, tmp_path: Path
) -> None:
    """Only decisions made since the model's policy last changed are judged: once the
    pause is lifted (revision 3), the decisions of revision 1 no longer count; new
    ones under revision 3 that breach again are answered again."""
    first_policy(registry, tmp_path)
    audited(store, 400, accuracy=0.95)
    with registry.client("alice") as alice, registry.client("bob") as bob:
        monitor = Monitor(store, alice, SystemClock(), 3600.0, Limits())
        (paused,) = monitor.check()
        doc = document_from_policy(alice.get_policy(0).policy)
        del doc["models"]["m"]["thresholds"]["paused"]
        lift = alice.propose(policy_from_document(doc), "retrained upstream", paused.revision)
        bob.approve(lift.id, "checked")
        assert alice.get_policy(0).revision == 3
        assert monitor.check() == []
        assert monitor.findings["m"].health[MODEL].recorded == 0
        audited(store, 400, accuracy=0.95, prefix="again", revision=3)
        (again,) = monitor.check()
        assert again.revision == 4


def test_a_harmful_arm_is_halted_through_the_registry(
    registry: Registry, store: FeedbackStore, tmp_path: Path
) -> None:
    """An arm whose Tier-1 errors the always-valid test finds above the control's is
    halted: its thresholds raised to the control's, applied at once."""
    sha = upload_artefact(registry, tmp_path / "cal.onnx")
    arms = [
        {"name": "control", "weight": 1},
        {"name": "low", "weight": 1, "thresholds": {"t_high": 0.8, "t_low": 0.5}},
    ]
    doc = registry_policy(
        sha, labels=["cat", "dog", "fox"], experiment={"name": "exp", "arms": arms}
    )
    with registry.client("alice") as alice, registry.client("bob") as bob:
        bob.approve(alice.propose(policy_from_document(doc), "an experiment", 0).id, "ok")
    audited(store, 1500, accuracy=0.995, arm="control", prefix="c")
    audited(store, 1500, accuracy=0.95, arm="low", prefix="l")
    with registry.client("alice") as alice:
        monitor = Monitor(store, alice, SystemClock(), 3600.0, Limits())
        (applied,) = monitor.check()
        assert (applied.breach.kind, str(applied.breach.scope)) == ("arm_harmful", "arm:low")
        head = document_from_policy(alice.get_policy(0).policy)
    low = head["models"]["m"]["experiment"]["arms"][1]
    assert low["thresholds"] == {"t_high": 0.9, "t_low": 0.5}
    assert monitor.findings["m"].experiments["low"].p_value <= 0.05


def test_alert_mode_changes_nothing(
    registry: Registry, store: FeedbackStore, tmp_path: Path
) -> None:
    first_policy(registry, tmp_path)
    audited(store, 400, accuracy=0.95)
    with registry.client("alice") as alice:
        monitor = Monitor(store, alice, SystemClock(), 3600.0, Limits(), act=False)
        assert monitor.check() == []
        assert [b.kind for b in monitor.findings["m"].breaches] == ["tier1_accuracy"]
        assert alice.get_policy(0).revision == 1


def test_an_unreachable_registry_is_a_counted_failure_and_the_task_lives_on(
    tmp_path: Path, store: FeedbackStore
) -> None:
    config = MonitorConfig.load(
        {
            "db": f"sqlite:{tmp_path / 'feedback.db'}",
            "registry": "127.0.0.1:9",
            "interval_seconds": "0.05",
        },
        env={},
    )
    process = build(config)
    process.start()
    try:
        deadline = time.monotonic() + 10
        while process.task.state.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.task.state.failures >= 3
        assert process.task.state.running
    finally:
        process.stop()


def test_a_feedback_database_that_is_not_there_is_refused_at_start(tmp_path: Path) -> None:
    """A mistyped SQLite path is not a new, empty log the monitor would watch forever."""
    config = MonitorConfig.load({"db": f"sqlite:{tmp_path / 'typo.db'}"}, env={})
    with pytest.raises(ConfigError, match=r"--db \(HITL_MONITOR_DB\): .*no such feedback"):
        build(config)
    assert not (tmp_path / "typo.db").exists()
