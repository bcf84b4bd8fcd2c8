"""The reviewers' web console end to end: a real ``hitl review serve`` on SQLite with
its console on a loopback port, escalations submitted over gRPC (with labels, input
references and context), and Debian's Chromium driven by Playwright: sign in, the
queue in SLA order, an item page, one accept and one override by the keyboard alone;
the resolutions checked in the store; a viewer and a reviewer on another's claim
refused; a lead's bulk accept, then the revert of one item. Screenshots of the queue,
an item page and a bulk accept preview go to bench-output/console/.

And the server time one item costs a reviewer through the console (claim, the item
page, resolve), measured in process over 100 items and written to
bench-output/console/throughput.json."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sidecar.clock import SystemClock
from sidecar.review.config import ReviewConfig
from sidecar.review.console.app import Console
from sidecar.review.console.sessions import Sessions
from sidecar.review.item import ItemState, Verdict
from sidecar.review.queue import ReviewQueue
from sidecar.review.store import open_store
from tests.chromium import chromium
from tests.console import serving_inputs, sign_in
from tests.escalations import escalation
from tests.integration.conftest import (
    ReviewProcess,
    start_review_console,
)
from tests.reviewers import add_principals

pytestmark = pytest.mark.integration

OUT = Path(__file__).resolve().parents[2] / "bench-output" / "console"
LABELS = ["legitimate", "fraud", "refund", "chargeback"]
BUDGET_SECONDS_PER_ITEM = 0.1  # 200 items an hour leave a reviewer 18 s each


def png(width: int = 240, height: int = 160) -> bytes:
    """A small gradient, as PNG, to stand for an input image."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 150))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


INPUTS = {
    "/inputs/receipt.png": ("image/png", png()),
    "/inputs/chat.txt": (
        "text/plain; charset=utf-8",
        b"Customer: I was charged twice for order 5521.\n"
        b"Agent: I see two captures of 129.90 EUR.\n",
    ),
}


@pytest.fixture
def inputs() -> Iterator[str]:
    """The escalations' inputs, where the console may fetch them."""
    with serving_inputs(INPUTS) as base:
        yield f"{base}/inputs/"


@pytest.fixture
def console(tmp_path: Path, inputs: str) -> Iterator[tuple[ReviewProcess, str]]:
    """A review queue process with its console; the console's base URL."""
    running, base = start_review_console(
        tmp_path,
        "--console-input-prefixes", inputs,
        "--consensus", "rule:two-eyes=2:all",
    )  # fmt: skip
    yield running, base
    assert running.stop() == 0


def submitted(running: ReviewProcess, inputs: str) -> None:
    """Three escalations of unequal urgency, submitted as the sidecar would."""
    common: dict[str, Any] = {
        "labels": LABELS,
        "logits": [1.2, 2.1, 0.3, -0.5],
        "model": "fraud",
        "created_at": time.time() - 5,
    }
    with running.client("sidecar-1") as client:
        results = client.submit(
            [
                escalation("esc-assisted", input_ref=f"{inputs}receipt.png", **common),
                escalation(
                    "esc-primary",
                    tier="HUMAN_PRIMARY",
                    reason="RULE",
                    rule_id="big-amount",
                    input_ref=f"{inputs}chat.txt",
                    context={"customer": "c-19", "order": "5521"},
                    **common,
                ),
                escalation(
                    "esc-audit", tier="AUTOMATED", input_ref="s3://inputs/esc-audit", **common
                ),
            ]
        )
    assert {r.status.value for r in results} == {"ACCEPTED"}


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def signed_in(browser: Any, base: str, token: str) -> Any:
    """A page of a fresh browser context, signed in with token by the keyboard."""
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    page.goto(f"{base}/signin")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
    page.keyboard.type(token)  # the token field has the focus
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{base}/", page.content()
    return page


def test_a_reviewer_works_the_queue_by_keyboard(
    console: tuple[ReviewProcess, str], inputs: str, browser: Any
) -> None:
    running, base = console
    submitted(running, inputs)
    OUT.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    page = signed_in(browser, base, running.tokens["alice"])
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )

    order = page.locator("#open tbody tr td:first-child a").all_inner_texts()
    assert order == ["esc-primary", "esc-assisted", "esc-audit"]
    assert page.locator("#open").inner_text().count("big-amount") == 1
    page.screenshot(path=str(OUT / "queue.png"), full_page=True)

    with page.expect_navigation():
        page.keyboard.press("n")  # claim the most urgent
    assert page.url == f"{base}/items/esc-primary"
    assert "charged twice for order 5521" in page.locator("#input-text").inner_text()
    assert page.locator("#predicted").inner_text() == "fraud"
    assert page.locator("#top-classes tr").count() == 4
    assert page.locator("#rule").inner_text() == "big-amount"
    time.sleep(0.3)  # reading
    with page.expect_navigation():
        page.keyboard.press("a")
    assert page.url == f"{base}/?done=esc-primary"

    with page.expect_navigation():
        page.keyboard.press("n")
    assert page.url == f"{base}/items/esc-assisted"
    page.wait_for_function("document.querySelector('img.input').naturalWidth > 0")
    page.screenshot(path=str(OUT / "item.png"), full_page=True)
    page.keyboard.press("o")
    page.keyboard.press("2")  # refund
    page.keyboard.type("a refund, not a sale")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == f"{base}/?done=esc-assisted"

    with page.expect_navigation():
        page.keyboard.press("n")  # alice holds the audit sample now
    assert page.url == f"{base}/items/esc-audit"
    assert errors == []  # no script error, no CSP violation

    with running.client("exporter") as client:
        resolved = {item.escalation_id: item for item in client.export()}
    assert sorted(resolved) == ["esc-assisted", "esc-primary"]
    accepted = resolved["esc-primary"].resolution
    overridden = resolved["esc-assisted"].resolution
    assert accepted is not None
    assert overridden is not None
    assert (accepted.verdict, accepted.label_class, accepted.reviewer) == (
        Verdict.ACCEPT,
        1,
        "alice",
    )
    assert (overridden.verdict, overridden.label_class, overridden.label) == (
        Verdict.OVERRIDE,
        2,
        "refund",
    )
    assert overridden.rationale == "a refund, not a sale"
    assert accepted.time_to_label_seconds >= 0.3
    assert 0 < overridden.time_to_label_seconds < 60
    shown = json.loads(accepted.evidence)
    assert shown["input_rendered"] == "text"
    assert shown["rule_id"] == "big-amount"
    assert [c["label"] for c in shown["top_classes"]][:2] == ["fraud", "legitimate"]
    assert json.loads(overridden.evidence)["input_rendered"] == "image"

    # Another reviewer sees alice's claim but may not act on it: 409.
    bob = signed_in(browser, base, running.tokens["bob"])
    bob.goto(f"{base}/items/esc-audit")
    assert "Claimed by alice" in bob.locator("#not-yours").inner_text()
    token = bob.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = bob.request.post(f"{base}/items/esc-audit/release", form={"csrf_token": token})
    assert answer.status == 409
    assert "claimed by 'alice', not 'bob'" in answer.text().replace("&#39;", "'")

    # A viewer sees the queue and the items, and cannot act: no keys, 403 on a POST.
    viewer = signed_in(browser, base, running.tokens["viewer"])
    assert viewer.locator("#claim-next").count() == 0
    viewer.keyboard.press("n")
    assert viewer.url == f"{base}/"
    viewer.goto(f"{base}/items/esc-audit")
    assert viewer.locator("#accept-form").count() == 0
    token = viewer.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = viewer.request.post(f"{base}/claim", form={"csrf_token": token})
    assert refused.status == 403
    assert "viewer (roles: viewer) may not call Claim" in refused.text()


def test_a_consensus_item_waits_for_a_second_reviewer_then_a_lead(
    console: tuple[ReviewProcess, str], browser: Any
) -> None:
    """An item of a rule needing two reviews: alice's answer reopens it for a second
    reviewer, who does not see it; bob disagrees, so it goes to adjudication, listed
    for the lead, who sees both answers and resolves it, finally."""
    running, base = console
    common: dict[str, Any] = {"labels": LABELS, "logits": [1.2, 2.1, 0.3, -0.5]}
    with running.client("sidecar-1") as client:
        client.submit([escalation("esc-two", reason="RULE", rule_id="two-eyes", **common)])

    alice = signed_in(browser, base, running.tokens["alice"])
    assert "answer 1 of 2" in alice.locator("#open").inner_text()
    with alice.expect_navigation():
        alice.keyboard.press("n")
    assert alice.url == f"{base}/items/esc-two"
    assert alice.locator("#answers-count").inner_text() == "answer 1 of 2"
    with alice.expect_navigation():
        alice.keyboard.press("a")
    assert "answer 2 of 2" in alice.locator("#open").inner_text()  # waits for another

    bob = signed_in(browser, base, running.tokens["bob"])
    with bob.expect_navigation():
        bob.keyboard.press("n")
    assert bob.url == f"{base}/items/esc-two"
    assert bob.locator("#answers-count").inner_text() == "answer 2 of 2"
    assert bob.locator("#answers").count() == 0  # alice's answer is not shown to him
    assert "alice" not in bob.content()
    bob.keyboard.press("o")
    bob.keyboard.press("2")
    bob.keyboard.type("a refund")
    with bob.expect_navigation():
        bob.keyboard.press("Enter")
    assert bob.locator("#adjudication").count() == 0  # a reviewer has nothing to adjudicate

    lead = signed_in(browser, base, running.tokens["lead"])
    assert lead.locator("#adjudication tbody tr td:first-child a").all_inner_texts() == ["esc-two"]
    with lead.expect_navigation():
        lead.keyboard.press("n")
    assert lead.url == f"{base}/items/esc-two"
    assert "awaiting adjudication" in lead.locator("#answers-count").inner_text()
    assert lead.locator("#answers li").count() == 2
    lead.keyboard.press("o")
    lead.keyboard.press("2")
    lead.keyboard.type("the customer asked for a refund")
    with lead.expect_navigation():
        lead.keyboard.press("Enter")
    assert lead.url == f"{base}/?done=esc-two"

    with running.client("exporter") as client:
        (item,) = list(client.export())
    assert item.resolution is not None
    assert (item.resolution.reviewer, item.resolution.label_class) == ("lead", 2)
    assert item.resolution.agreement == "adjudicated (1 of 2 agreed)"
    assert [(a.reviewer, a.label_class) for a in item.answers] == [("alice", 1), ("bob", 2)]


def test_a_lead_bulk_accepts_then_reverts_one_item(
    console: tuple[ReviewProcess, str], browser: Any
) -> None:
    """A lead opens Bulk accept from the queue, previews the confident items of a
    model, accepts them, opens one from the batch page and reverts it with a reason:
    it is open again and its history shows the resolution taken back, by whom and
    why. The preview page's screenshot goes to bench-output/console/bulk.png."""
    running, base = console
    common: dict[str, Any] = {
        "labels": LABELS,
        "logits": [1.2, 2.1, 0.3, -0.5],
        "predicted_label": "fraud",
    }
    with running.client("sidecar-1") as client:
        client.submit(
            [
                escalation(
                    "esc-sure",
                    model="fraud",
                    tier="HUMAN_PRIMARY",
                    calibrated_confidence=0.99,
                    **common,
                ),
                escalation(
                    "esc-small",
                    model="fraud",
                    calibrated_confidence=0.982,
                    reason="RULE",
                    rule_id="small-amount",
                    **common,
                ),
                escalation("esc-unsure", model="fraud", calibrated_confidence=0.61, **common),
                escalation("esc-other", model="churn", calibrated_confidence=0.99, **common),
            ]
        )
    OUT.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    lead = signed_in(browser, base, running.tokens["lead"])
    lead.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    with lead.expect_navigation():
        lead.click("#bulk-link")
    assert lead.url == f"{base}/bulk"
    lead.select_option("#bulk-model", "fraud")
    lead.fill("#bulk-min-confidence", "0.97")
    with lead.expect_navigation():
        lead.click("#bulk-preview")
    assert lead.locator("#preview tbody tr td:first-child a").all_inner_texts() == [
        "esc-sure",
        "esc-small",
    ]
    assert "small-amount" in lead.locator("#preview").inner_text()
    assert lead.locator("#bulk-accept").inner_text() == "Accept 2 items"
    lead.screenshot(path=str(OUT / "bulk.png"), full_page=True)

    with lead.expect_navigation():
        lead.click("#bulk-accept")
    assert lead.url.startswith(f"{base}/bulk/batches/bulk-")
    batch_id = lead.locator("#batch-id").inner_text()
    assert lead.locator("#batch tbody tr td:first-child a").all_inner_texts() == [
        "esc-small",
        "esc-sure",
    ]
    with lead.expect_navigation():
        lead.click("#batch a[href='/items/esc-sure']")
    assert f"bulk accept {batch_id}" in lead.locator("#resolution").inner_text()
    lead.fill("#revert-reason", "the customer disputed it")
    with lead.expect_navigation():
        lead.click("#revert")
    assert lead.url == f"{base}/items/esc-sure?reverted=1"
    assert lead.locator("#reverted").is_visible()
    assert lead.locator("#resolution").count() == 0
    history = lead.locator("#history li").all_inner_texts()
    assert any("resolved by lead: ACCEPT" in line for line in history), history
    assert any("reverted by lead: the customer disputed it" in line for line in history)
    assert errors == []  # no script error, no CSP violation

    with running.client("desk") as client:
        assert [item.escalation_id for item in client.export()] == ["esc-small"]
        reopened = client.list_items(ItemState.OPEN)
    assert "esc-sure" in [item.escalation_id for item in reopened]


def test_the_console_makes_200_items_an_hour_easy(tmp_path: Path) -> None:
    """Server time per item (claim, the item page, resolve) through the console in
    process, over 100 items on SQLite: well under what 200 items an hour allow."""
    store = open_store(f"sqlite:{tmp_path / 'review.db'}")
    tokens = add_principals(store)
    queue = ReviewQueue(store, SystemClock())
    count = 100
    queue.submit([escalation(f"e{i:03d}", labels=["a", "b", "c"]) for i in range(count)])
    config = ReviewConfig(db=f"sqlite:{tmp_path / 'review.db'}", console_listen="127.0.0.1:0")
    app = Console(queue, config, Sessions(b"k" * 32, secure=False)).application()
    client = TestClient(app, follow_redirects=False)
    sign_in(client, tokens["alice"])
    bearer = {"Authorization": f"Bearer {tokens['alice']}"}
    actions = {"claim": 0.0, "item_page": 0.0, "resolve": 0.0}
    for i in range(count):
        started = time.perf_counter()
        claimed = client.post("/api/claim", json={}, headers=bearer)
        shown = time.perf_counter()
        page = client.get(f"/items/{claimed.json()['escalation_id']}")
        decided = time.perf_counter()
        verdict = (
            {"verdict": "OVERRIDE", "corrected_class": 2, "rationale": "r"}
            if i % 3 == 0
            else {"verdict": "ACCEPT"}
        )
        resolved = client.post(
            f"/api/items/{claimed.json()['escalation_id']}/resolve", json=verdict, headers=bearer
        )
        done = time.perf_counter()
        assert (claimed.status_code, page.status_code, resolved.status_code) == (200, 200, 200)
        actions["claim"] += shown - started
        actions["item_page"] += decided - shown
        actions["resolve"] += done - decided
    store.close()
    per_item = sum(actions.values()) / count
    figures = {
        "items": count,
        "seconds_per_item": round(per_item, 5),
        "seconds_per_action": {name: round(total / count, 5) for name, total in actions.items()},
        "items_per_hour_of_server_time": round(3600 / per_item),
        "budget_seconds_per_item": BUDGET_SECONDS_PER_ITEM,
        "measured": "in process (Starlette TestClient), SQLite, synchronous=FULL;"
        " includes the client's own time",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "throughput.json").write_text(json.dumps(figures, indent=2) + "\n")
    assert per_item < BUDGET_SECONDS_PER_ITEM, figures
