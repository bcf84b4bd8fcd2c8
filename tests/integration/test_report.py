"""``hitl report``, end to end: a real feedback store filled through its API and a
real registry (alice proposes, bob approves, then alice's tightening is applied at
once), each of the four reports written by the command, then looked at in headless
Chromium: its title, every chart drawn, the right figures in its text, and not one
request beyond the file itself. Bad input is one line on stderr and exit 2."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hitl.cli import main
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from monitor.actions import reason, tightened
from monitor.checks import ESTIMATOR, Act, Breach, Limits, Scope, check_model
from monitor.estimates import health
from monitor.observations import Observation
from monitor.recorded import observations
from sidecar.core.policy import parse_policy
from sidecar.feedback.records import decided, received
from sidecar.feedback.store import open_store
from sidecar.registry.messages import document_from_policy, policy_from_document
from tests.chromium import chromium
from tests.integration.conftest import hitl_command
from tests.registry import Registry, in_process, registry_policy, upload_artefact

pytestmark = pytest.mark.integration

HOUR = 3600.0
DECISIONS = 6000
# The "eager" arm automates from a lower t_high and errs far more often.
ERROR_RATE = {"control": 0.02, "eager": 0.15}


@dataclass
class World:
    registry: Registry
    db: str
    since: float
    until: float
    workdir: Path

    def observations(self) -> list[Observation]:
        store = open_store(self.db)
        try:
            return observations(store, "m", self.since, self.until)
        finally:
            store.close()

    def report(self, kind: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """Run ``hitl report kind`` over the world's period as vic, a viewer: reading
        is all a report does."""
        args = ["--db", self.db, "--registry", self.registry.address]
        args += ["--registry-token-file", str(self.registry.token_file("vic"))]
        args += ["--model", "m", "--since", str(self.since), "--until", str(self.until)]
        args += ["--buckets", "6", "--group-attribute", "region"]
        return subprocess.run(
            hitl_command("report", kind, *args, *extra),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("report")
    now = time.time()
    with in_process("sqlite", workdir) as registry:
        # The registry stamps revisions with its own clock, so both fall at the end of
        # the period, after the decisions of revision 1 that it covers.
        since, until = now - 6 * HOUR, now + 600
        _policies(registry, workdir, since, now)
        db = f"sqlite:{workdir / 'feedback.db'}"
        _decisions(db, since, now)
        yield World(registry, db, since, until, workdir)


def _policies(registry: Registry, workdir: Path, since: float, now: float) -> None:
    """Revision 1 proposed by alice and approved by bob; revision 2 the monitor's
    pause of domain eu, proposed by alice (an operator) and applied at once."""
    sha = upload_artefact(registry, workdir / "cal.onnx")
    doc = registry_policy(
        sha,
        domains={"eu": {"t_high": 0.95, "t_low": 0.6}},
        experiment={
            "name": "eager",
            "arms": [
                {"name": "control", "weight": 50},
                {"name": "eager", "weight": 50, "thresholds": {"t_high": 0.8, "t_low": 0.5}},
            ],
        },
        target_tier1_accuracy=0.9,
        max_ece=0.2,
        drift={"window": 100, "psi_alarm": 0.25, "action": "pause_automation"},
    )
    breach = Breach(
        "tier1_accuracy",
        Scope("domain", "eu"),
        Act.PAUSE,
        "m domain:eu: Tier-1 accuracy 0.8100, upper bound 0.8600 below the target 0.9",
        {"window": [since, now], "estimator": ESTIMATOR, "tier1_accuracy": 0.81, "target": 0.9},
    )
    with registry.client("alice") as alice, registry.client("bob") as bob:
        first = alice.propose(policy_from_document(doc), "first policy for m", 0)
        assert bob.approve(first.id, "thresholds checked on the validation set").revision == 1
        pause = tightened(doc, "m", breach)
        assert alice.propose(policy_from_document(pause), reason(breach), 1).revision == 2


def _decisions(db: str, since: float, now: float) -> None:
    """Decisions of model m over [since, now), as a sidecar records them (every
    escalated one, half of the other automated ones), with their labels: a review for
    each escalated one, an outcome for some of the rest."""
    rng = random.Random(7)
    records, events = [], []
    for i in range(DECISIONS):
        arm = ("control", "eager")[i % 2]
        at = since + 60 + (now - since - 120) * i / DECISIONS
        confidence = rng.uniform(0.3, 0.6) if rng.random() < 0.15 else rng.uniform(0.75, 1.0)
        tier, why = _route(confidence, 0.9 if arm == "control" else 0.8, _guard(at, since, now))
        if tier == "AUTOMATED" and rng.random() < 0.05:
            why = "AUDIT_SAMPLE"
        probability = 0.5 if (tier, why) == ("AUTOMATED", "THRESHOLD") else 1.0
        if rng.random() >= probability:
            continue  # not recorded
        predicted = rng.randrange(3)
        record = _decision(f"r-{i}", at, confidence, predicted, tier, why, probability, arm, i)
        records.append(decided(record, "sidecar-1", at))
        escalated = tier != "AUTOMATED" or why == "AUDIT_SAMPLE"
        if escalated or rng.random() < 0.8:
            wrong = rng.random() < (ERROR_RATE[arm] if tier == "AUTOMATED" else 0.3)
            label = (predicted + 1) % 3 if wrong else predicted
            kind = fpb.FEEDBACK_REVIEW if escalated else fpb.FEEDBACK_OUTCOME
            event = fpb.FeedbackEvent(
                feedback_id=f"f-{i}",
                request_id=f"r-{i}",
                model="m",
                type=kind,
                label=fpb.Label(class_index=label),
            )
            events.append(received(event, "app", at + 30))
    store = open_store(db)
    try:
        store.add_decisions(records)
        store.add(events)
    finally:
        store.close()


def _guard(at: float, since: float, now: float) -> str:
    """What holds automation back at a time: the drift guard in the third hour, the
    pause in the last."""
    if at > now - HOUR:
        return "PAUSED"
    return "FALLBACK_DRIFT" if since + 2 * HOUR <= at < since + 3 * HOUR else ""


def _route(confidence: float, t_high: float, held: str) -> tuple[str, str]:
    if confidence >= t_high:
        return ("HUMAN_ASSISTED", held) if held else ("AUTOMATED", "THRESHOLD")
    return ("HUMAN_ASSISTED" if confidence >= 0.5 else "HUMAN_PRIMARY"), "THRESHOLD"


def _decision(
    request_id: str,
    at: float,
    confidence: float,
    predicted: int,
    tier: str,
    why: str,
    probability: float,
    arm: str,
    i: int,
) -> fpb.DecisionRecord:
    return fpb.DecisionRecord(
        request_id=request_id,
        model="m",
        model_version="v1",
        domain="eu" if i % 3 == 0 else "",
        tier=dpb.Tier.Value(f"TIER_{tier}"),
        reason=dpb.Reason.Value(f"REASON_{why}"),
        predicted_class=predicted,
        calibrated_confidence=confidence,
        logits=[0.1, 0.2, 0.3],
        policy_revision=1,
        calibration_version="t-v1",
        experiment_arm=arm,
        decided_at=at,
        inclusion_probability=probability,
        string_attributes={"region": ("north", "south")[i % 3 == 1]},
    )


# -- looking at a report -------------------------------------------------------------


@dataclass
class Seen:
    title: str
    text: str
    charts: list[dict[str, float] | None]  # each <svg>'s bounding box
    strays: list[str]  # every request but the file's own


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def look(browser: Any, path: Path) -> Seen:
    """Open the report as a file and read what it shows; no request may leave it."""
    url = path.resolve().as_uri()
    strays: list[str] = []
    page = browser.new_page()

    def only_the_file(route: Any) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            strays.append(route.request.url)
            route.abort()

    def requested(request: Any) -> None:
        if request.url != url:
            strays.append(request.url)

    page.route("**/*", only_the_file)
    page.on("request", requested)
    page.goto(url, wait_until="load")
    seen = Seen(
        page.title(),
        page.inner_text("body"),
        [chart.bounding_box() for chart in page.locator("svg").all()],
        strays,
    )
    page.close()
    return seen


def written(world: World, kind: str) -> Path:
    out = world.workdir / f"{kind}.html"
    done = world.report(kind, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return out


def assert_self_contained(seen: Seen, charts: int) -> None:
    assert seen.strays == []
    assert len(seen.charts) == charts
    for box in seen.charts:
        assert box is not None
        assert box["width"] > 100
        assert box["height"] > 100


def assert_states_what_it_is(seen: Seen, volume: str) -> None:
    """The model, the period, when, by which estimator, over how much."""
    for fact in ("Model\tm", "Period\t", "Generated\t", f"Estimator\t{ESTIMATOR}"):
        assert fact in seen.text
    assert f"Data\t{volume}" in seen.text


# -- the reports -------------------------------------------------------------------


def test_calibration_health_shows_the_monitors_figures(world: World, browser: Any) -> None:
    """Tier-1 accuracy and its interval, ECE, per domain and group, three charts."""
    seen = look(browser, written(world, "calibration-health"))
    assert seen.title == "Calibration health: model m"
    assert_self_contained(seen, charts=3)
    found = world.observations()
    whole = health(found)
    labelled = sum(o.label is not None for o in found)
    assert_states_what_it_is(seen, f"{len(found):,} recorded decisions ({labelled:,} labelled)")
    assert whole.tier1_accuracy is not None
    assert whole.tier1_interval is not None
    assert f"Tier-1 accuracy\t{whole.tier1_accuracy:.4f}" in seen.text
    low, high = whole.tier1_interval
    assert f"[{low:.4f}, {high:.4f}]" in seen.text
    assert whole.ece is not None
    assert f"Weighted ECE\t{whole.ece:.4f}" in seen.text
    assert "target_tier1_accuracy\t0.9" in seen.text
    assert "(no domain)" in seen.text
    assert "eu\t" in seen.text
    assert "north\t" in seen.text
    assert "south\t" in seen.text


def test_routing_distribution_shows_tiers_reasons_and_automation(
    world: World, browser: Any
) -> None:
    """Tier and reason shares per bucket, the loop's PAUSED and FALLBACK_DRIFT among them."""
    seen = look(browser, written(world, "routing-distribution"))
    assert seen.title == "Routing distribution: model m"
    assert_self_contained(seen, charts=3)
    found = world.observations()
    whole = health(found)
    assert f"Automation rate\t{whole.tier_shares['AUTOMATED']:.1%}" in seen.text
    decisions = sum(1 / o.inclusion_probability for o in found)
    for why in ("PAUSED", "FALLBACK_DRIFT"):
        held = sum(1 / o.inclusion_probability for o in found if o.reason == why)
        assert held > 0
        assert f"{why}\t{held / decisions:.1%}\t{held:,.0f}" in seen.text


def test_experiment_finds_the_eager_arm_harmful(world: World, browser: Any) -> None:
    """Each arm's counts and the always-valid p-value the monitor computes."""
    seen = look(browser, written(world, "experiment"))
    assert seen.title == "Experiment: model m"
    assert_self_contained(seen, charts=1)
    with world.registry.client("vic") as viewer:
        head = viewer.get_policy(0)
    doc = {**document_from_policy(head.policy), "revision": head.revision}
    policy = parse_policy(doc).models["m"]
    findings = check_model(policy, world.observations(), None, Limits(), (world.since, world.until))
    eager = findings.experiments["eager"]
    assert eager.harmful
    assert "Verdicts\teager: harmful" in seen.text
    assert f"{eager.p_value:.4g}" in seen.text
    assert f"{eager.arm.errors:,.1f} of {eager.arm.trials:,.1f}" in seen.text


def test_threshold_review_shows_who_approved_what_and_why(world: World, browser: Any) -> None:
    """Revision 1 approved by bob; revision 2 applied at once with its evidence."""
    seen = look(browser, written(world, "threshold-review"))
    assert seen.title == "Threshold review: model m"
    assert_self_contained(seen, charts=1)
    assert "Revisions touching the model\t2" in seen.text
    assert "Revision 1" in seen.text
    assert "Revision 2" in seen.text
    assert "Approved by\tbob" in seen.text
    assert "Approved by\tapplied at once: tightening" in seen.text
    assert "Proposed by\talice" in seen.text
    assert "Reason\tfirst policy for m" in seen.text
    assert "tier1_accuracy\t0.81" in seen.text  # the monitor's evidence, laid out
    assert "models.m.domains.eu.paused\t(absent)\ttrue" in seen.text


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"--model": "nobody"}, "--model: no model 'nobody'"),
        ({"--since": "2100-01-01T00:00:00Z"}, "--since must be before --until"),
        ({"--since": "+1h", "--until": "+2h"}, "--since/--until: no decision of model 'm'"),
        ({"--db": "sqlite:/nonexistent/feedback.db"}, "(HITL_MONITOR_DB): sqlite:/nonexistent"),
        ({"--registry": "127.0.0.1:1"}, "(HITL_MONITOR_REGISTRY) 127.0.0.1:1: cannot be reached"),
        ({"--registry-token-file": "stranger"}, "HITL_MONITOR_REGISTRY_TOKEN_FILE"),
    ],
)
def test_bad_input_is_one_line_naming_it_and_exit_2(
    world: World, change: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run in this process: main's handler is the command's, without a new interpreter."""
    stranger = world.workdir / "stranger.token"
    stranger.write_text("not-a-token")
    given = {
        "--db": world.db,
        "--registry": world.registry.address,
        "--registry-token-file": str(world.registry.token_file("vic")),
        "--model": "m",
        "--since": str(world.since),
        "--until": str(world.until),
        "--out": str(world.workdir / "bad.html"),
    }
    later = {"+1h": world.until + HOUR, "+2h": world.until + 2 * HOUR}
    for flag, value in change.items():
        given[flag] = str(later.get(value, stranger if value == "stranger" else value))
    argv = ["report", "calibration-health", *(part for pair in given.items() for part in pair)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith("hitl: ")
    assert named in err
    assert not (world.workdir / "bad.html").exists()
