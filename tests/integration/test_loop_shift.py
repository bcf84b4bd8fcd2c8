"""The loop closed on a label shift, with real processes: a registry, a feedback
service, a review queue, two sidecars on the registry's policy and the calibration
monitor.

A classifier's calibrator and thresholds are fitted on a long-tailed labelled split
(its easy classes frequent, its hard ones rare, as a team's first labels often are);
production starts like it and then turns balanced, so more of what is automated
comes from the hard classes and Tier-1 accuracy falls below what the thresholds were
set for. The outputs are the real CIFAR-10 classifier's in ../shared/data/calibration
when that file is there, otherwise a synthetic classifier with the same structure
(easy and hard classes). The stream is sent to one sidecar; the other is only probed.

What must happen: the first sidecar's drift guard pauses automation within its
window of the shift (FALLBACK_DRIFT, without labels); the monitor turns that pause
into the policy's through the registry (revision 2, the monitor's operator principal,
the evidence in its reason) and every sidecar runs revision 2 within 5 s of the
guard's first pause; nothing is automated after it; reviews and outcomes reach the
feedback service attributed to their decisions. The figures are written to
bench-output/loop_shift.json for the performance page."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.label_shift import SHARED
from calibrators.data import Dataset, check, load_dataset
from calibrators.export import export_artefact
from calibrators.fit import cross_fitted, fit_calibrator
from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.registry.messages import document_from_policy, policy_from_document
from sidecar.review.item import Verdict
from tests.feedback_service import PRINCIPALS, add_principals, start
from tests.integration.conftest import (
    SidecarProcess,
    hitl_command,
    review_sink,
    start_review,
    start_sidecar,
    wait_for,
)
from tests.registry import Registry, as_process

pytestmark = pytest.mark.integration

FILE = "wideresnet-16-4-cifar-10.npz"
TARGET = 0.99
BEFORE, PER_CLASS_AFTER = 1200, 100  # requests before the shift; per class after it
TAIL = 0.05  # the hardest class keeps this share of the easiest's rows
WINDOW, PSI_ALARM = 1000, 0.08
OUT = Path(__file__).resolve().parents[2] / "bench-output" / "loop_shift.json"


@dataclass
class Scenario:
    source: str
    artefact: Path
    version: str
    labels: list[str]
    t_high: float
    before: list[tuple[list[float], int]]
    after: list[tuple[list[float], int]]


def synthetic_classifier(rows: int = 10_000, classes: int = 10) -> Dataset:
    """Logits of a classifier whose classes range from easy (a wide margin) to hard."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, classes, rows)
    margin = np.linspace(6.0, 2.0, classes)[labels]
    logits = rng.normal(0.0, 1.2, (rows, classes))
    logits[np.arange(rows), labels] += margin
    return check("synthetic", logits, labels, None, probabilities=False)


def build_scenario(workdir: Path) -> Scenario:
    path = SHARED / FILE
    data, source = (load_dataset(path), FILE) if path.exists() else (synthetic_classifier(), "")
    rng = np.random.default_rng(0)
    rows = rng.permutation(data.rows)
    fitting, production = rows[: data.rows // 2], rows[data.rows // 2 :]
    easy_first = np.argsort(
        [-(data.logits[data.labels == k].argmax(1) == k).mean() for k in range(data.classes)]
    )
    rank = np.empty(data.classes, dtype=np.int64)
    rank[easy_first] = np.arange(data.classes)
    share = TAIL ** (rank / (data.classes - 1))
    keep = rng.random(fitting.shape[0]) < share[data.labels[fitting]]
    labelled = data.take(fitting[keep])
    fitted = fit_calibrator(labelled, "temperature")
    names = [f"class-{k}" for k in range(data.classes)]
    exported = export_artefact(fitted, workdir / "cal.onnx", labels=names)
    cross = cross_fitted(labelled, "temperature")
    confidence, right = cross.max(1), cross.argmax(1) == labelled.labels
    t_high = next(
        float(t) for t in np.linspace(0.5, 0.999, 500) if right[confidence >= t].mean() >= TARGET
    )
    counts = np.round(BEFORE * share / share.sum()).astype(int)
    before: list[int] = []
    after: list[int] = []
    for k in range(data.classes):
        members = production[data.labels[production] == k]
        before += members[: counts[k]].tolist()
        after += members[counts[k] : counts[k] + PER_CLASS_AFTER].tolist()
    rng.shuffle(before)
    rng.shuffle(after)

    def rows_of(indices: list[int]) -> list[tuple[list[float], int]]:
        return [(data.logits[i].tolist(), int(data.labels[i])) for i in indices]

    return Scenario(
        source or "synthetic",
        exported.path,
        exported.metadata.version,
        names,
        round(t_high, 4),
        rows_of(before),
        rows_of(after),
    )


@dataclass
class Probes:
    """Each sidecar's first moment (monotonic) at revision 2 or later."""

    sidecars: list[SidecarProcess]
    logits: list[float]
    seen: dict[int, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        clients = [s.client() for s in self.sidecars]
        n = 0
        while not self.stop.is_set() and len(self.seen) < len(clients):
            for i, client in enumerate(clients):
                if i in self.seen:
                    continue
                n += 1
                answer = client.route(route_request(f"probe-{i}-{n}", "m", self.logits))
                if answer.policy_revision >= 2:
                    self.seen[i] = time.monotonic()
            time.sleep(0.02)
        for client in clients:
            client.close()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with as_process("sqlite", tmp_path / "registry", "--refresh-seconds", "1") as running:
        yield running


def test_a_label_shift_is_caught_before_automated_accuracy_falls(
    tmp_path: Path, registry: Registry
) -> None:
    scenario = build_scenario(tmp_path)
    with registry.client("alice") as alice, registry.client("bob") as bob:
        info = alice.put_calibrator(scenario.artefact.read_bytes(), "cal", scenario.version)
        doc = {
            "models": {
                "m": {
                    "calibrator": {"name": "cal", "sha256": info.sha256, "version": info.version},
                    "labels": scenario.labels,
                    "thresholds": {"t_high": scenario.t_high, "t_low": 0.5},
                    "audit_sample_rate": 0.05,
                    "target_tier1_accuracy": TARGET,
                    "drift": {
                        "window": WINDOW,
                        "psi_alarm": PSI_ALARM,
                        "psi_recover": PSI_ALARM / 2,
                        "action": "pause_automation",
                    },
                }
            }
        }
        first = alice.propose(policy_from_document(doc), "thresholds for the first labels", 0)
        bob.approve(first.id, "reviewed")

    feedback_db = f"sqlite:{tmp_path / 'feedback' / 'feedback.db'}"
    (tmp_path / "feedback").mkdir()
    tokens = add_principals(feedback_db, PRINCIPALS)
    (tmp_path / "sidecar-feedback.token").write_text(tokens["sidecar-1"])
    (tmp_path / "queue.token").write_text(tokens["queue"])
    processes: list[Any] = []
    try:
        feedback = start(tmp_path / "feedback", feedback_db, tokens, "--sweep-seconds", "0.2")
        processes.append(feedback.process)
        queue = start_review(
            tmp_path / "review",
            "--feedback", feedback.address,
            "--feedback-token-file", str(tmp_path / "queue.token"),
        )  # fmt: skip
        processes.append(queue.process)
        flags = [
            "--registry", registry.address,
            "--registry-public-key", str(registry.keys.public),
            "--registry-token-file", str(registry.token_file("sid")),
            "--feedback", feedback.address,
            "--feedback-token-file", str(tmp_path / "sidecar-feedback.token"),
            "--decision-sample", "1",
            *review_sink(tmp_path / "review", int(queue.address.rpartition(":")[2])),
        ]  # fmt: skip
        sidecars = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            env = {"HITL_REGISTRY_POLL_SECONDS": "0.5"}
            sidecars.append(start_sidecar(tmp_path / name, None, *flags, env=env))
            processes.append(sidecars[-1].process)
        for sidecar in sidecars:
            sidecar.wait_serving()
        with (tmp_path / "monitor.log").open("ab") as log:
            monitor = subprocess.Popen(
                hitl_command(
                    "monitor", "serve",
                    "--db", feedback_db,
                    "--registry", registry.address,
                    "--registry-token-file", str(registry.token_file("alice")),
                    "--interval-seconds", "0.25",
                    "--min-recorded", "300",
                ),
                stdout=log, stderr=log,
            )  # fmt: skip
        processes.append(monitor)
        figures = replay(scenario, sidecars)
        resolved = review_everything(queue)
        with feedback.client("ops") as ops:
            wait_for(lambda: len(ops.get(figures["a_shifted_request"]).events) >= 1, 10.0, "labels")
            known = ops.get(figures["a_shifted_request"])
    finally:
        for process in processes:
            process.kill()
            process.wait()

    figures |= {"source": scenario.source, "t_high": scenario.t_high, "reviews": resolved}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")

    # The guard paused within its window of the shift, and no later than the running
    # Tier-1 accuracy of what was automated fell below the target.
    assert figures["guard_paused_at"] is not None, figures
    assert figures["guard_paused_at"] <= WINDOW
    assert figures["running_tier1_at_action"] >= TARGET, figures
    assert figures["automated_after_action"] == 0
    # The monitor made it the policy's, through the registry, within 5 s everywhere.
    assert figures["breach_to_every_sidecar_seconds"] < 5.0, figures
    with registry.client("vic") as viewer:
        head = viewer.get_policy(0)
    assert head.revision == 2
    assert (head.proposed_by, head.approved_by) == ("alice", "")
    assert document_from_policy(head.policy)["models"]["m"]["thresholds"]["paused"] is True
    summary, _, evidence = head.reason.partition("; evidence ")
    assert summary.startswith("calibration monitor: m")
    assert json.loads(evidence)["breach"] in {"drift_guard", "psi"}
    # The audit trail: the guard's fallbacks, then the policy's pause under revision 2.
    lines = (tmp_path / "a" / "state" / "audit.jsonl").read_text().splitlines()
    decisions = [r for r in map(json.loads, lines) if r["event"] == "route.decision"]
    reasons = {(r["reason"], r["policy_revision"], r["degraded"]) for r in decisions}
    assert {("FALLBACK_DRIFT", 1, True), ("PAUSED", 2, False)} <= reasons
    # Outcomes (and the queue's reviews) reached the feedback service, attributed.
    assert known.HasField("decision")
    assert fpb.FEEDBACK_OUTCOME in {e.event.type for e in known.events}


def replay(scenario: Scenario, sidecars: list[SidecarProcess]) -> dict[str, Any]:
    """Send the stream to the first sidecar, an outcome after each answer; probe both
    for revision 2 from the guard's first pause on."""
    probes = Probes(sidecars, scenario.before[0][0])
    prober = threading.Thread(target=probes.run, daemon=True)
    automated: list[tuple[int, bool]] = []  # (position in the stream, right)
    held: list[bool] = []  # right, of those the thresholds would automate but a pause held
    guard_at: int | None = None
    guard_time = 0.0
    everywhere: int | None = None  # the first request answered under revision 2
    stream = scenario.before + scenario.after
    shifted = ""
    # A generous deadline: the stream is long, and a shared machine can stall one call
    # for longer than the client's default second; what is measured here is routing.
    with sidecars[0].client(timeout=10.0) as client:
        for position, (logits, truth) in enumerate(stream):
            request_id = f"req-{position}"
            answer = client.route(route_request(request_id, "m", logits))
            client.record_outcome(
                pb.OutcomeRequest(request_id=request_id, model="m", true_class=truth)
            )
            right = answer.predicted_class == truth
            if answer.tier == dpb.TIER_AUTOMATED:
                automated.append((position, right))
            elif answer.reason in (dpb.REASON_FALLBACK_DRIFT, dpb.REASON_PAUSED):
                held.append(right)
            if guard_at is None and answer.reason == dpb.REASON_FALLBACK_DRIFT:
                guard_at, guard_time = position, time.monotonic()
                prober.start()
            if position == len(scenario.before):
                shifted = request_id
            if everywhere is None and answer.policy_revision >= 2:
                everywhere = position
        wait_for(lambda: len(probes.seen) == len(sidecars), 10.0, "revision 2 at every sidecar")
    probes.stop.set()
    shift = len(scenario.before)
    action = guard_at if guard_at is not None else len(stream)
    before_action = [ok for position, ok in automated if position < action]
    running = np.cumsum(before_action) / np.arange(1, len(before_action) + 1)
    pre = [ok for position, ok in automated if position < shift]
    in_shift = [ok for position, ok in automated if shift <= position < action]
    return {
        "requests_before_shift": shift,
        "requests_after_shift": len(scenario.after),
        "guard_paused_at": None if guard_at is None else guard_at - shift,
        "registry_revision_at_request": None if everywhere is None else everywhere - shift,
        "tier1_accuracy_before_shift": float(np.mean(pre)),
        "automated_before_shift": len(pre),
        "tier1_accuracy_in_shift_before_action": float(np.mean(in_shift)) if in_shift else None,
        "automated_in_shift_before_action": len(in_shift),
        "running_tier1_at_action": float(running[-1]),
        "running_tier1_lowest_after_300": float(running[300:].min()),
        "automated_after_action": sum(1 for position, _ in automated if position >= action),
        "held_by_the_pause": len(held),
        "tier1_accuracy_the_pause_prevented": float(np.mean(held)) if held else None,
        "breach_to_every_sidecar_seconds": max(probes.seen.values()) - guard_time,
        "a_shifted_request": shifted,
    }


def review_everything(queue: Any, deadline: float = 30.0) -> int:
    """A reviewer resolves what is in the queue: accept (the review's label is then
    the model's suggestion). Returns how many."""
    resolved = 0
    end = time.monotonic() + deadline
    with queue.client("alice") as alice:
        while time.monotonic() < end:
            try:
                item = alice.claim()
            except Exception:  # nothing left to claim
                break
            if item is None:
                break
            alice.resolve(item.escalation_id, Verdict.ACCEPT)
            resolved += 1
    return resolved
