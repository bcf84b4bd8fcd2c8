"""The README's first command: the demo runs end to end and its numbers hold together,
the feedback service's log and the dataset compiled from it included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_end_to_end(tmp_path: Path) -> None:
    """Trains, calibrates, routes over gRPC; Tier-1 accuracy meets the target and every
    escalation answered is recorded."""
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "hitl", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["routed"] == sum(summary["tiers"].values()) > 300
    assert summary["tier1_accuracy"] >= summary["target_tier1_accuracy"]
    assert summary["escalated"] == summary["escalations_in_queue"] > 0
    assert summary["exported"] == summary["reviewed"] > 0
    assert summary["exit_codes"] == {
        "sidecar": 0,
        "review queue": 0,
        "feedback service": 0,
        "registry": 0,
    }
    assert (summary["policy_revision"], summary["approved_by"]) == (1, "risk-bob")
    assert summary["outcomes_matched"] == summary["routed"]
    assert summary["tiers"]["TIER_AUTOMATED"] > 0
    assert summary["reasons"]["REASON_RULE"] > 0
    assert "Tier-1 accuracy" in result.stdout
    # The loop: every outcome and resolution at the feedback service, and a dataset
    # compiled from its log (every escalated decision is labelled by its outcome).
    log = summary["feedback_log"]
    assert log["OUTCOME"] == summary["routed"]
    assert log["REVIEW"] == summary["reviewed"]
    assert log["DECISIONS"] >= summary["escalated"]
    assert summary["dataset_rows"] == log["DECISIONS"]
    assert summary["dataset"].startswith("ds-")
    assert summary["dataset_temperature"] > 0
