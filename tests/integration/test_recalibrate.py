"""``hitl monitor recalibrate`` against a real registry and a real feedback log: a
recalibration is proposed, never applied; the registry keeps it PENDING because a new
calibrator widens; its reason and evidence file show the held-out figures before and
after; only another principal with the approver role can apply it, and then the head
runs the new calibrator with the model's pause lifted. Bad input exits 2 with one
line naming the flag, and proposes nothing.

The decisions come from a deliberately over-confident classifier: its logits are
three times those whose softmax is calibrated (the labels are drawn from that
softmax), so the current calibrator (temperature 1) is badly calibrated and a new
one can be measurably better."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from calibrators.metrics import softmax
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from sidecar.feedback.records import Decided, Received, decided, received
from sidecar.feedback.store import open_store
from sidecar.registry.messages import document_from_policy, policy_from_document
from tests.integration.conftest import hitl_command
from tests.registry import Registry, in_process, registry_policy, upload_artefact
from tests.unit.feedback.test_validation import decision, event

pytestmark = pytest.mark.integration

LABELS = ["cat", "dog", "fox"]
DECISIONS = 5000
OVERCONFIDENCE = 3.0  # the model's logits over the calibrated ones
AUTOMATED_SAMPLE = 0.5  # the share of automated decisions the sidecar records
LABELLED = {"escalated": 0.9, "automated": 0.85}  # the shares that get a label
TARGET = 0.95


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with in_process("sqlite", tmp_path) as running:
        yield running


def paused_policy(registry: Registry, tmp_path: Path) -> dict[str, Any]:
    """Revision 1 proposed by alice and approved by bob; revision 2 pauses the model
    (alice, an operator: a tightening, applied at once). Returns revision 2's document."""
    sha = upload_artefact(registry, tmp_path / "cal.onnx")
    doc = registry_policy(
        sha,
        target_tier1_accuracy=TARGET,
        labels=LABELS,
        domains={"eu": {"t_high": 0.95, "t_low": 0.5}},
    )
    with registry.client("alice") as alice, registry.client("bob") as bob:
        bob.approve(alice.propose(policy_from_document(doc), "first policy", 0).id, "ok")
        paused = copy.deepcopy(doc)
        body = paused["models"]["m"]
        body["thresholds"]["paused"] = True
        body["domains"]["eu"]["paused"] = True
        pause = alice.propose(policy_from_document(paused), "paused by hand", 1)
        assert (pause.state, pause.revision) == (rpb.APPLIED, 2)
    return paused


def fill_log(db: Path) -> None:
    """DECISIONS decisions of model m routed by the current policy (temperature 1,
    t_high 0.9, t_low 0.5), as a sidecar records them: every escalated one, a sample
    of the automated; most of the recorded ones labelled, the rest not."""
    rng = np.random.default_rng(11)
    calibrated = rng.normal(0.0, 3.0, (DECISIONS, 3))
    truth = softmax(calibrated)
    classes = (rng.random((DECISIONS, 1)) > truth.cumsum(axis=1)).sum(axis=1)
    logits = OVERCONFIDENCE * calibrated
    confidence = softmax(logits).max(axis=1)
    now = time.time()
    decisions: list[Decided] = []
    labels: list[Received] = []
    for i in range(DECISIONS):
        automated = bool(confidence[i] >= 0.9)
        if automated and rng.random() >= AUTOMATED_SAMPLE:
            continue  # not recorded: the sidecar samples its automated decisions
        request_id = f"r-{i:05d}"
        record = decision(
            request_id=request_id,
            model="m",
            model_version="v1",
            tier=dpb.TIER_AUTOMATED if automated else dpb.TIER_HUMAN_ASSISTED,
            reason=dpb.REASON_THRESHOLD,
            predicted_class=int(logits[i].argmax()),
            predicted_label=LABELS[int(logits[i].argmax())],
            labels=LABELS,
            calibrated_confidence=float(confidence[i]),
            logits=logits[i].tolist(),
            domain="eu" if i % 5 == 0 else "",
            policy_revision=1,
            calibration_version="t-v1",
            decided_at=now - 3600 + i * 0.5,
            inclusion_probability=AUTOMATED_SAMPLE if automated else 1.0,
        )
        decisions.append(decided(record, "sidecar-1", now - 3000))
        if rng.random() < LABELLED["automated" if automated else "escalated"]:
            label = fpb.Label(class_index=int(classes[i]))
            kind = fpb.FEEDBACK_OUTCOME if automated else fpb.FEEDBACK_REVIEW
            sent = event(feedback_id=f"f-{i}", request_id=request_id, model="m", label=label)
            sent.type = kind
            labels.append(received(sent, "queue", now - 60))
    store = open_store(f"sqlite:{db}")
    try:
        store.add_decisions(decisions)
        store.add(labels)
    finally:
        store.close()


def recalibrate(registry: Registry, db: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    """``hitl monitor recalibrate --model m`` as alice, started (not waited for)."""
    command = hitl_command(
        "monitor", "recalibrate", "--model", "m", "--db", f"sqlite:{db}",
        "--registry", registry.address,
        "--registry-token-file", str(registry.workdir / "alice.token"),
        "--out", str(out), *extra,
    )  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_recalibration_is_proposed_with_its_evidence_and_applied_only_by_an_approver(
    registry: Registry, tmp_path: Path
) -> None:
    paused_policy(registry, tmp_path)
    db = tmp_path / "feedback.db"
    fill_log(db)
    registry.token_file("alice")
    out = tmp_path / "recalibration"
    started = recalibrate(registry, db, out)
    # Bad input, run meanwhile: exit 2, one line naming the flag, nothing proposed.
    bad = {
        "--model": recalibrate(registry, db, tmp_path / "x1", "--model", "nope"),
        "--since": recalibrate(registry, db, tmp_path / "x2", "--since", "1000", "--until", "2000"),
        "--registry": recalibrate(registry, db, tmp_path / "x3", "--registry", closed_port()),
        "--db": recalibrate(registry, tmp_path / "missing.db", tmp_path / "x4"),
        "--target": recalibrate(registry, db, tmp_path / "x5", "--target", "0.9999"),
        "--held-out": recalibrate(registry, db, tmp_path / "x6", "--held-out", "1.5"),
    }
    stdout, stderr = started.communicate(timeout=120)
    assert started.returncode == 0, stderr
    for flag, process in bad.items():
        _, said = process.communicate(timeout=120)
        assert process.returncode == 2, (flag, said)
        (line,) = said.strip().splitlines()
        assert line.startswith(f"hitl: {flag}"), (flag, said)

    shown = json.loads(stdout)
    assert shown["proposal"]["state"] == "PENDING"
    assert shown["proposal"]["revision"] == 0
    assert shown["proposal"]["base_revision"] == 2
    widening = shown["proposal"]["widening"]
    assert any(w.startswith("models.m.calibrator") for w in widening), widening
    evidence = json.loads(Path(shown["evidence"]).read_text())
    held = evidence["held_out"]
    assert held["after"]["ece"] < held["before"]["ece"]
    assert held["before"]["paused"] is True
    before, after = held["before"]["segments"][0], held["after"]["segments"][0]
    assert before["missed"]  # the current calibrator over-promises: below target
    assert not after["missed"]
    assert evidence["label_shift"]["production_rows"] > 0

    with registry.client("alice") as alice, registry.client("bob") as bob:
        (pending,) = alice.proposals(state=rpb.PENDING)
        assert pending.id == shown["proposal"]["id"]
        summary, _, facts = pending.reason.partition("; evidence ")
        assert summary.startswith("recalibration: m on ds-")
        figures = json.loads(facts)
        assert figures["held_out"]["ece"][1] < figures["held_out"]["ece"][0]
        assert alice.get_policy(0).revision == 2  # proposed, not applied
        with pytest.raises(grpc.RpcError) as refused:
            alice.approve(pending.id, "mine")
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        approved = bob.approve(pending.id, "the evidence holds")
        assert (approved.state, approved.revision) == (rpb.APPLIED, 3)
        head = document_from_policy(bob.get_policy(0).policy)["models"]["m"]
    assert (
        head["calibrator"]["sha256"]
        == shown["artefact"]["sha256"]
        == evidence["calibrator"]["sha256"]
    )
    assert "paused" not in json.dumps(head)
    assert head["thresholds"]["t_high"] == evidence["thresholds"]["t_high"]
    print(
        f"\nheld-out ECE {held['before']['ece']:.4f} -> {held['after']['ece']:.4f};"
        f" Tier-1 {before['tier1_accuracy']:.4f} -> {after['tier1_accuracy']:.4f}"
        f" (lower {after['tier1_interval'][0]:.4f}); automated"
        f" {before['automated_share']:.1%} -> {after['automated_share']:.1%};"
        f" {evidence['method']}, rows {evidence['dataset']['rows']}"
    )
