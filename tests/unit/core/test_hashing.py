"""Stable hashing, audit sampling and experiment assignment."""

from __future__ import annotations

import numpy as np

from sidecar.core.experiments import Arm, Experiment
from sidecar.core.hashing import draw, escalation_id, salt_for
from sidecar.core.request import RouteInput
from sidecar.core.sampling import AuditSampler

IDS = [f"req-{i}" for i in range(20_000)]


def request(request_id: str, **strings: str) -> RouteInput:
    return RouteInput(request_id, "m", np.zeros(3, dtype=np.float32), string_attributes=strings)


def test_draw_is_stable_across_processes() -> None:
    """The same salt and key always give the same draw (a fixed known value)."""
    assert draw(salt_for("audit:m"), "req-1") == draw(salt_for("audit:m"), "req-1")
    assert draw(salt_for("audit:m"), "req-1") != draw(salt_for("audit:n"), "req-1")
    assert escalation_id("m", "req-1") == escalation_id("m", "req-1")
    assert escalation_id("m", "req-1") != escalation_id("n", "req-1")
    assert escalation_id("m", "req-1").startswith("esc-")
    assert len(escalation_id("m", "r")) == 36


def test_audit_rate_is_honoured() -> None:
    """A 5% sampler samples 5% +- 0.5% of 20,000 ids; 0 samples none, 1 samples all."""
    share = sum(AuditSampler(0.05, "m").should_sample(i) for i in IDS) / len(IDS)
    assert abs(share - 0.05) < 0.005
    assert not any(AuditSampler(0.0, "m").should_sample(i) for i in IDS[:1000])
    assert all(AuditSampler(1.0, "m").should_sample(i) for i in IDS[:1000])


def test_arms_follow_weights_and_are_sticky() -> None:
    """Arms split 80/20 within 1%; one unit key always gets one arm."""
    experiment = Experiment("m/e", "request_id", (Arm("a", 8.0), Arm("b", 2.0)))
    share_b = sum(experiment.choose(request(i)).name == "b" for i in IDS) / len(IDS)
    assert abs(share_b - 0.2) < 0.01
    by_user = Experiment("m/e", "attributes.user", (Arm("a", 1.0), Arm("b", 1.0)))
    arms = {by_user.choose(request(i, user="u-42")).name for i in IDS[:200]}
    assert len(arms) == 1


def test_missing_unit_attribute_gets_first_arm() -> None:
    """Without the unit attribute, the request gets the first (control) arm."""
    experiment = Experiment("m/e", "attributes.user", (Arm("control", 0.001), Arm("b", 1000.0)))
    assert experiment.choose(request("r")).name == "control"


def test_independent_draws_for_audit_and_arms() -> None:
    """Audit sampling and arm assignment use different salts, so they are uncorrelated."""
    sampler = AuditSampler(0.5, "m")
    experiment = Experiment("m", "request_id", (Arm("a", 1.0), Arm("b", 1.0)))
    both = sum(sampler.should_sample(i) and experiment.choose(request(i)).name == "a" for i in IDS)
    assert abs(both / len(IDS) - 0.25) < 0.015


def test_a_keyed_audit_sample_cannot_be_predicted_without_the_key() -> None:
    """With the deployment's key the sample keeps its rate and is the same on every
    run, but it is another sample than the unkeyed (public) one and another key's:
    serving code that knows the salt, not the key, cannot pick ids that escape it."""
    public = {i for i in IDS if AuditSampler(0.05, "m").should_sample(i)}
    keyed = {i for i in IDS if AuditSampler(0.05, "m", b"k" * 32).should_sample(i)}
    again = {i for i in IDS if AuditSampler(0.05, "m", b"k" * 32).should_sample(i)}
    other = {i for i in IDS if AuditSampler(0.05, "m", b"j" * 32).should_sample(i)}
    assert keyed == again
    assert abs(len(keyed) / len(IDS) - 0.05) < 0.01
    assert len(keyed & public) < len(keyed) * 0.2  # about 5 % overlap, as for independent draws
    assert len(keyed & other) < len(keyed) * 0.2


def test_the_holder_keys_every_snapshot_it_serves() -> None:
    """A SnapshotHolder with an audit key applies it to each snapshot swapped in."""
    from sidecar.core.policy import parse_policy
    from sidecar.policy.snapshot import Snapshot, SnapshotHolder

    doc = {
        "revision": 1,
        "models": {
            "m": {
                "calibrator": {"path": "c.onnx", "sha256": "0" * 64, "version": "v"},
                "thresholds": {"t_high": 0.9, "t_low": 0.5},
                "audit_sample_rate": 0.05,
            }
        },
    }
    holder = SnapshotHolder(b"k" * 32)
    holder.swap(Snapshot(parse_policy(doc), {}, {}, "test"))
    assert holder.current is not None
    assert holder.current.policy.models["m"].audit.key == b"k" * 32
