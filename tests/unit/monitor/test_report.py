"""monitor.report: decisions fall in the bucket of their time; shares count each
recorded decision 1 / inclusion probability times; the monitor's evidence is read
back from a change's reason; each page is complete in itself and shows what it
quotes as text; the experiment's last look is the monitor's own check."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from monitor.actions import reason
from monitor.checks import Act, Breach, Limits, Reference, Scope, check_model
from monitor.observations import Observation
from monitor.report import (
    REPORTS,
    Period,
    Revision,
    Subject,
    evidence,
    looks,
    reason_shares,
    render,
    review_volume,
)
from monitor.report_cli import REPORTS as COMMANDS
from sidecar.core.diff import FieldChange
from sidecar.core.policy import ModelPolicy, parse_policy


def observation(at: float = 0.5, **fields: Any) -> Observation:
    base: dict[str, Any] = {
        "request_id": "r",
        "model": "m",
        "confidence": 0.95,
        "predicted_class": 0,
        "tier": "AUTOMATED",
        "reason": "THRESHOLD",
        "inclusion_probability": 1.0,
        "decided_at": at,
    }
    return Observation(**(base | fields))


def policy() -> ModelPolicy:
    body = {
        "calibrator": {"name": "cal", "sha256": "0" * 64, "version": "v1"},
        "thresholds": {"t_high": 0.9, "t_low": 0.5},
        "experiment": {
            "name": "x",
            "arms": [{"name": "control", "weight": 1}, {"name": "eager", "weight": 1}],
        },
        "target_tier1_accuracy": 0.9,
        "max_ece": 0.1,
    }
    return parse_policy({"revision": 3, "models": {"m": body}}).models["m"]


def traffic(decisions: int = 600, seed: int = 3) -> list[Observation]:
    """Decisions over [0, 600) in two arms, the eager one wrong more often."""
    rng = random.Random(seed)
    found = []
    for i in range(decisions):
        arm = ("control", "eager")[i % 2]
        confidence = rng.uniform(0.3, 1.0)
        automated = confidence >= 0.8
        wrong = rng.random() < (0.05 if arm == "control" else 0.2)
        found.append(
            observation(
                float(i),
                request_id=f"r-{i}",
                confidence=confidence,
                predicted_class=i % 3,
                tier="AUTOMATED" if automated else "HUMAN_ASSISTED",
                reason="PAUSED" if 500 <= i < 520 else "THRESHOLD",
                inclusion_probability=0.5 if automated else 1.0,
                label=(i + 1) % 3 if wrong else i % 3,
                arm=arm,
                domain=("", "eu")[i % 5 == 0],
                group=("north", "south")[i % 3 == 0],
            )
        )
    return found


def subject(**fields: Any) -> Subject:
    base: dict[str, Any] = {
        "model": "m",
        "period": Period(0.0, 600.0, 4),
        "generated_at": 700.0,
        "policy": policy(),
        "policy_revision": 3,
        "observations": traffic(),
        "reference": Reference((0.0, 0.5, 1.0), (3.0, 7.0), (1.0, 1.0, 1.0)),
        "revisions": [
            Revision(2, -5.0, "alice", "bob", "first", (), policy().thresholds),
            Revision(
                3,
                300.0,
                "alice",
                "",
                "pause <script>alert(1)</script>",
                (FieldChange("models.m.thresholds.paused", "", "true"),),
                policy().thresholds,
            ),
        ],
        "group_attribute": "region",
    }
    return Subject(**(base | fields))


def test_each_decision_falls_in_the_bucket_of_its_time() -> None:
    """Buckets are [e_i, e_i+1): an edge starts the next one."""
    period = Period(0.0, 10.0, 5)
    parts = period.split([observation(at) for at in (0.0, 1.99, 2.0, 7.5, 9.99)])
    assert [[o.decided_at for o in part] for part in parts] == [
        [0.0, 1.99],
        [2.0],
        [],
        [7.5],
        [9.99],
    ]


def test_a_period_must_hold_time_and_a_bucket() -> None:
    """An empty period or no bucket is refused."""
    with pytest.raises(ValueError, match="empty period"):
        Period(5.0, 5.0, 3)
    with pytest.raises(ValueError, match="empty period"):
        Period(0.0, 5.0, 0)


def test_reason_shares_count_each_decision_by_its_inverse_probability() -> None:
    """An automated decision recorded at rate 0.1 stands for ten."""
    shares = reason_shares(
        [
            observation(inclusion_probability=0.1),
            observation(tier="HUMAN_ASSISTED", reason="PAUSED"),
        ]
    )
    assert shares["THRESHOLD"] == pytest.approx(10 / 11)
    assert shares["PAUSED"] == pytest.approx(1 / 11)
    assert shares["FALLBACK_DRIFT"] == 0.0


def test_review_volume_counts_escalations_and_the_audit_sample() -> None:
    """Human tiers and audited automated decisions reach a person; the rest do not."""
    seen = [
        observation(inclusion_probability=0.2),
        observation(reason="AUDIT_SAMPLE"),
        observation(tier="HUMAN_PRIMARY", reason="RULE"),
    ]
    assert review_volume(seen) == 2.0


def test_the_monitors_evidence_is_read_back_from_its_reason() -> None:
    """What monitor.actions.reason writes, evidence() lays out again."""
    breach = Breach("ece", Scope("model"), Act.PAUSE, "m: ECE too high", {"ece": 0.2})
    summary, attached, rest = evidence(reason(breach))
    assert summary == "calibration monitor: m: ECE too high"
    assert attached == {"breach": "ece", "scope": "model", "ece": 0.2}
    assert rest == ""


def test_a_reason_without_whole_evidence_is_shown_as_written() -> None:
    """A person's reason is all summary; evidence cut short is kept as text."""
    assert evidence("raise t_high after the incident") == (
        "raise t_high after the incident",
        None,
        "",
    )
    assert evidence('monitor: x; evidence {"ece": 0.2, "wind…') == (
        "monitor: x",
        None,
        '{"ece": 0.2, "wind…',
    )


def test_a_revision_touches_a_model_by_its_own_paths() -> None:
    """models.m and what lies under it; never models.mx."""
    changes = (
        FieldChange("models.mx.max_ece", "", "0.1"),
        FieldChange("models.m.thresholds.t_high", "0.9", "0.95"),
    )
    revision = Revision(4, 0.0, "alice", "bob", "why", changes, None)
    assert revision.changes_to("m") == [changes[1]]
    assert not revision.touches("other")


def test_every_report_command_has_a_report() -> None:
    """The command's names (declared without importing matplotlib) are the reports'."""
    assert set(COMMANDS) == set(REPORTS)


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_each_page_is_complete_in_itself_and_quotes_as_text(kind: str) -> None:
    """No script, no URL to fetch, a policy forbidding both; quoted text is escaped."""
    page = render(kind, subject())
    assert f"<title>{REPORTS[kind].title}: model m</title>" in page
    assert "Content-Security-Policy" in page
    assert "<script" not in page
    assert re.search(r"""(src|href)=["'](?!#)""", page) is None
    assert "<svg" in page


def test_the_threshold_review_lists_the_periods_revisions_of_the_model() -> None:
    """The revision in force at the start is drawn, not listed; one made in it is."""
    page = render("threshold-review", subject())
    assert "Revision 3" in page
    assert "Revision 2" not in page
    assert "applied at once: tightening" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_experiments_last_look_is_the_monitors_check_of_the_period() -> None:
    """The p-value drawn last is the one ``hitl monitor check`` finds over the period."""
    about = subject()
    last = looks(about)[-1].findings.experiments["eager"]
    whole = check_model(about.policy, about.observations, None, Limits(), (0.0, 600.0))
    assert last == whole.experiments["eager"]
