"""The README's first command: the demo runs end to end and its numbers hold together,
the feedback service's log and the dataset compiled from it included, and its
stand-in reviewer works the queue through the review console's JSON API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hitl.demo import STAND_IN

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One run of ``hitl demo``: its work directory and what it printed."""
    workdir = tmp_path_factory.mktemp("demo") / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "hitl", "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, result.stdout


def test_demo_end_to_end(demo: tuple[Path, str]) -> None:
    """Trains, calibrates, routes over gRPC; Tier-1 accuracy meets the target and every
    escalation answered is recorded."""
    workdir, stdout = demo
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
    assert "Tier-1 accuracy" in stdout
    # The loop: every outcome and resolution at the feedback service, and a dataset
    # compiled from its log (every escalated decision is labelled by its outcome).
    log = summary["feedback_log"]
    assert log["OUTCOME"] == summary["routed"]
    assert log["REVIEW"] == summary["reviewed"]
    assert log["DECISIONS"] >= summary["escalated"]
    assert summary["dataset_rows"] == log["DECISIONS"]
    assert summary["dataset"].startswith("ds-")
    assert summary["dataset_temperature"] > 0


def test_demo_prints_the_console_while_the_queue_runs(demo: tuple[Path, str]) -> None:
    """The console's URL and the reviewer's token file are printed once, between the
    review queue's start and its stop, and the file holds the token."""
    workdir, stdout = demo
    lines = stdout.splitlines()
    token_file = workdir / "keys" / "review-demo-reviewer.token"
    console = re.compile(
        r"   review console: http://127\.0\.0\.1:\d+/ \(sign in as demo-reviewer with the"
        rf" token in {re.escape(str(token_file))}\)"
    )
    printed = [i for i, line in enumerate(lines) if console.fullmatch(line)]
    assert len(printed) == 1, stdout
    started = next(i for i, line in enumerate(lines) if line.startswith("   review queue: pid"))
    stopped = next(i for i, line in enumerate(lines) if line.startswith("   review queue stopped"))
    assert started < printed[0] < stopped
    assert token_file.read_text().strip()


def test_demo_reviews_through_the_console(demo: tuple[Path, str]) -> None:
    """Every exported resolution carries the evidence the stand-in reviewer sent the
    console's JSON API, its measured time to label and the verdict the truth asks."""
    workdir, _ = demo
    summary = json.loads((workdir / "summary.json").read_text())
    export = (workdir / "labelled.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in export]
    assert len(rows) == summary["reviewed"] > 0
    assert sum(row["verdict"] == "OVERRIDE" for row in rows) == summary["overridden"]
    for row in rows:
        evidence = json.loads(row["evidence"])
        assert evidence["reviewer"] == STAND_IN
        assert evidence["shown_by"] == "POST /api/claim"
        assert (evidence["escalation_id"], evidence["input_ref"]) == (
            row["escalation_id"],
            row["input_ref"],
        )
        assert row["reviewer"] == "demo-reviewer"
        assert row["time_to_label_seconds"] > 0
        overridden = row["label"] != row["predicted_class"]
        assert row["verdict"] == ("OVERRIDE" if overridden else "ACCEPT")
