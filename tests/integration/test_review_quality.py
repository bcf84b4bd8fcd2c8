"""Reviewer quality end to end: a real ``hitl review serve`` on SQLite with its console
and metrics endpoint, consensus for one rule, and reviewers working through the
console's JSON API. The quality API and page show each reviewer's agreement with
consensus and say ground truth is unavailable; the reviewer gauges appear on the
real Prometheus scrape after the sweep."""

from __future__ import annotations

import html
import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.console import sign_in
from tests.escalations import escalation
from tests.integration.conftest import (
    ReviewProcess,
    start_review_console,
    wait_for,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration

LABELS = ["legitimate", "fraud", "refund", "chargeback"]


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[tuple[ReviewProcess, str, int]]:
    """A review queue with its console and metrics; the console's URL, the metrics port."""
    metrics = free_port()
    running, base = start_review_console(
        tmp_path,
        "--metrics-addr", f"127.0.0.1:{metrics}",
        "--consensus", "rule:two-eyes=2:all",
        "--sweep-seconds", "0.2",
    )  # fmt: skip
    yield running, base, metrics
    assert running.stop() == 0


def act(base: str, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{base}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def answer(base: str, token: str, corrected_class: int | None = None) -> str:
    """Claim the next item and accept it, or override it with corrected_class."""
    claimed = act(base, token, "/api/claim", {})
    verdict: dict[str, Any] = {"verdict": "ACCEPT"}
    if corrected_class is not None:
        verdict = {"verdict": "OVERRIDE", "corrected_class": corrected_class, "rationale": "r"}
    escalation_id = str(claimed["escalation_id"])
    act(base, token, f"/api/items/{escalation_id}/resolve", verdict)
    return escalation_id


@contextmanager
def signed_in(base: str, token: str) -> Iterator[httpx.Client]:
    """An HTTP client holding a console session signed in with token."""
    with httpx.Client(base_url=base, timeout=10) as browser:
        sign_in(browser, token)
        yield browser


def history(page: str) -> list[str]:
    """The item page's history, each event's text after its time."""
    listed = re.search(r'<ol class="history" id="history">(.*?)</ol>', page, re.S)
    assert listed, page
    return [
        html.unescape(text).strip()
        for text in re.findall(r"</time>(.*?)</li>", listed.group(1), re.S)
    ]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return str(page.read().decode())


def test_quality_shows_consensus_agreement_and_the_gauges(
    queue: tuple[ReviewProcess, str, int],
) -> None:
    """Two items needing two reviews (one agreed, one adjudicated by the lead) and one
    needing one: the API's consensus figures and pairs, the page's columns and its
    ground-truth notice, and the reviewer gauges on the scrape."""
    running, base, metrics = queue
    common: dict[str, Any] = {"labels": LABELS, "logits": [1.2, 2.1, 0.3, -0.5]}
    two_eyes: dict[str, Any] = {"reason": "RULE", "rule_id": "two-eyes", **common}
    with running.client("sidecar-1") as client:
        client.submit(
            [
                escalation("c1", **two_eyes),
                escalation("c2", **two_eyes),
                escalation("one", tier="AUTOMATED", **common),
            ]
        )
    tokens = running.tokens
    assert answer(base, tokens["alice"]) == "c1"
    assert answer(base, tokens["alice"]) == "c2"
    assert answer(base, tokens["bob"]) == "c1"  # agreed: class 1
    assert answer(base, tokens["bob"], 2) == "c2"  # to adjudication
    assert answer(base, tokens["lead"], 2) == "c2"  # the lead says 2
    assert answer(base, tokens["alice"], 3) == "one"

    response = httpx.get(
        f"{base}/api/quality", headers={"Authorization": f"Bearer {tokens['lead']}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["truth_available"] is False
    reviewers = report["reviewers"]
    assert {name: q["items"] for name, q in reviewers.items()} == {"alice": 3, "bob": 2, "lead": 1}
    assert reviewers["alice"]["consensus"] == {"items": 2, "rate": 0.5, "kappa": 0.0}
    assert reviewers["bob"]["consensus"] == {"items": 2, "rate": 1.0, "kappa": 1.0}
    assert reviewers["lead"]["consensus"]["items"] == 0
    assert report["pairs"] == [
        {"first": "alice", "second": "bob", "items": 2, "rate": 0.5, "kappa": 0.0}
    ]
    refused = httpx.get(
        f"{base}/api/quality", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=10
    )
    assert refused.status_code == 403

    with signed_in(base, tokens["lead"]) as browser:
        page = browser.get("/quality")
    assert page.status_code == 200
    assert "agrees with consensus" in page.text
    assert 'id="truth-unavailable"' in page.text
    assert "50.0% of 2" in page.text  # alice's agreement with consensus

    def gauges() -> dict[tuple[str, str, str], float]:
        """(metric, reviewer, check) -> value, of the reviewer gauges on the scrape."""
        return {
            (sample.name, sample.labels["reviewer"], sample.labels.get("check", "")): sample.value
            for family in text_string_to_metric_families(scrape(metrics))
            for sample in family.samples
            if sample.name.startswith("hitl_review_reviewer_")
        }

    everything = {"alice": 3.0, "bob": 2.0, "lead": 1.0}  # the sweep after the last label
    wait_for(
        lambda: (
            {r: gauges().get(("hitl_review_reviewer_items", r, "")) for r in everything}
            == everything
        ),
        10,
        "the gauges",
    )
    seen = gauges()
    assert seen["hitl_review_reviewer_items", "alice", ""] == 3
    assert seen["hitl_review_reviewer_override_rate", "bob", ""] == 0.5
    assert seen["hitl_review_reviewer_consensus_agreement", "alice", ""] == 0.5
    assert seen["hitl_review_reviewer_consensus_agreement", "bob", ""] == 1.0
    assert ("hitl_review_reviewer_consensus_agreement", "lead", "") not in seen
    assert ("hitl_review_reviewer_median_handling_seconds", "alice", "") in seen
    flags = {key: v for key, v in seen.items() if key[0] == "hitl_review_reviewer_flagged"}
    assert {check for _, _, check in flags} == {"labels", "override_rate"}
    assert len(flags) == 6
    assert set(flags.values()) == {0.0}


def test_the_item_page_shows_the_whole_history(queue: tuple[ReviewProcess, str, int]) -> None:
    """A skip, a claim and an answer on an item needing two reviews: the lead's page
    lists each; bob, answering second, sees neither alice's claim nor her answer."""
    running, base, _ = queue
    two_eyes: dict[str, Any] = {
        "labels": LABELS,
        "logits": [1.2, 2.1, 0.3, -0.5],
        "created_at": time.time() - 5,
    }
    with running.client("sidecar-1") as client:
        (submitted,) = client.submit([escalation("c1", rule_id="two-eyes", **two_eyes)])
    assert submitted.status.value == "ACCEPTED", submitted.message
    tokens = running.tokens
    act(base, tokens["alice"], "/api/claim", {})
    act(base, tokens["alice"], "/api/items/c1/release", {})
    assert answer(base, tokens["alice"]) == "c1"
    act(base, tokens["bob"], "/api/claim", {})
    with signed_in(base, tokens["bob"]) as bob:
        for_bob = history(bob.get("/items/c1").text)
    assert not any("alice" in event for event in for_bob)
    assert "claimed by bob" in for_bob
    with signed_in(base, tokens["lead"]) as lead:
        for_lead = history(lead.get("/items/c1").text)
    assert for_lead[2:] == [
        "claimed by alice",
        "released by alice, undecided",
        "claimed by alice",
        "answered by alice: ACCEPT, class 1 b",
        "claimed by bob",
    ]
