"""A lead's bulk accept and revert through the console's pages, over HTTP (Starlette's
TestClient) against the real queue on a real SQLite store: the form, the required
preview (a dry run), the accept of what it listed and the batch page; the revert
button of a resolved item and the history it leaves; CSRF, roles and bad input
answered with their status and the field named. The browser test of the same flow
is in test_review_console.py."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from sidecar.clock import FakeClock
from sidecar.review.config import ReviewConfig
from sidecar.review.console.app import Console
from sidecar.review.console.sessions import Sessions
from sidecar.review.item import ItemState, Verdict
from sidecar.review.queue import ReviewQueue
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore, open_store
from tests.console import csrf, sign_in
from tests.escalations import escalation
from tests.reviewers import add_principals

pytestmark = pytest.mark.integration

KEY = b"b" * 32
LABELS = ["cat", "dog", "eel"]


@dataclass
class Desk:
    queue: ReviewQueue
    store: ReviewStore
    clock: FakeClock
    tokens: dict[str, str]
    config: ReviewConfig

    def client(self, who: str) -> TestClient:
        """A browser signed in as who."""
        app = Console(self.queue, self.config, Sessions(KEY, secure=False)).application()
        client = TestClient(app, follow_redirects=False)
        answer = sign_in(client, self.tokens[who])
        assert answer.status_code == 303, answer.text
        return client

    def submit(self, escalation_id: str, confidence: float, **fields: Any) -> None:
        self.queue.submit(
            [
                escalation(
                    escalation_id,
                    labels=LABELS,
                    predicted_label="dog",
                    calibrated_confidence=confidence,
                    **fields,
                )
            ]
        )


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    db = f"sqlite:{tmp_path / 'review.db'}"
    store = open_store(db)
    clock = FakeClock()
    config = ReviewConfig(db=db, console_listen="127.0.0.1:0")
    yield Desk(ReviewQueue(store, clock, Sla()), store, clock, add_principals(store), config)
    store.close()


def sealed_preview(page: str) -> str:
    """The sealed preview the page's accept form carries."""
    form = re.search(r'<form[^>]*id="bulk-accept-form".*?</form>', page, re.S)
    assert form, page
    found = re.search(r'name="preview" value="([^"]+)"', form.group(0))
    assert found, page
    return html.unescape(found.group(1))


def ids(page: str, table: str) -> list[str]:
    """The escalation ids linked from the table with that id, in order."""
    found = re.search(rf'<table[^>]*id="{table}".*?</table>', page, re.S)
    assert found, page
    return re.findall(r'<a href="/items/([^"]+)">', found.group(0))


def history(page: str) -> list[str]:
    """The item page's history, one line an event, as its text."""
    found = re.search(r'<ol class="history" id="history">(.*?)</ol>', page, re.S)
    assert found, page
    lines = found.group(1).split("</li>")
    return [html.unescape(re.sub(r"<[^>]+>", "", line)).strip() for line in lines if "<li>" in line]


def preview(client: TestClient, **asked: str) -> Any:
    return client.get("/bulk", params={"preview": "1", "model": "m", **asked})


def seeded(desk: Desk) -> None:
    """Three items of model m (two confident), one of another model."""
    desk.submit("e1", 0.99)
    desk.submit("e2", 0.98, rule_id="small-amount")
    desk.submit("e3", 0.50)
    desk.submit("x1", 0.99, model="other")


def bulk_accepted(desk: Desk, client: TestClient) -> str:
    """Preview and accept model m at 0.97 as client; the batch page's path."""
    shown = preview(client, min_confidence="0.97")
    done = client.post(
        "/bulk/accept",
        data={"csrf_token": csrf(shown.text), "preview": sealed_preview(shown.text)},
    )
    assert done.status_code == 303, done.text
    return done.headers["location"]


def test_a_lead_previews_then_accepts_and_sees_the_batch(desk: Desk) -> None:
    """The preview lists what the accept would take and changes nothing; the accept
    resolves each as the lead's own ACCEPT and the batch page lists them."""
    seeded(desk)
    lead = desk.client("lead")
    assert 'href="/bulk"' in lead.get("/").text
    form = lead.get("/bulk")
    assert form.status_code == 200
    assert re.findall(r'<option value="(\w+)"', form.text)[:2] == ["m", "other"]

    shown = preview(lead, min_confidence="0.97")
    assert shown.status_code == 200
    assert ids(shown.text, "preview") == ["e1", "e2"]
    assert "small-amount" in shown.text
    assert "Accept 2 items" in shown.text
    assert [i.escalation_id for i in desk.queue.list_items(ItemState.RESOLVED)] == []

    narrowed = preview(lead, min_confidence="0.97", rule_id="small-amount", limit="5")
    assert ids(narrowed.text, "preview") == ["e2"]
    assert ids(preview(lead, min_confidence="0.5", limit="1").text, "preview") == ["e1"]

    batch_page = bulk_accepted(desk, lead)
    assert urlsplit(batch_page).path.startswith("/bulk/batches/bulk-")
    batch_id = urlsplit(batch_page).path.rsplit("/", 1)[1]
    batch = lead.get(batch_page)
    assert batch.status_code == 200
    assert ids(batch.text, "batch") == ["e1", "e2"]
    assert batch_id in batch.text
    assert "2 items resolved of 2 previewed" in batch.text
    for escalation_id in ("e1", "e2"):
        r = desk.queue.get(escalation_id).resolution
        assert r is not None
        assert (r.reviewer, r.verdict, r.label_class) == ("lead", Verdict.ACCEPT, 1)
        assert r.rationale.startswith(f"bulk accept {batch_id}:")
    assert desk.queue.get("e3").resolution is None
    assert desk.queue.get("x1").resolution is None


def test_the_accept_takes_only_what_the_preview_listed(desk: Desk) -> None:
    """An item arriving after the preview, more urgent than those shown, is not
    taken: the accept takes the previewed items only. An item shown and claimed since
    refuses the accept, 409, and nothing is resolved until the lead previews again."""
    seeded(desk)
    lead = desk.client("lead")
    shown = preview(lead, min_confidence="0.97")
    desk.submit("e0", 0.995, tier="HUMAN_PRIMARY")  # more urgent than both

    again = preview(lead, min_confidence="0.97")
    assert ids(again.text, "preview") == ["e0", "e1", "e2"]
    desk.queue.claim("alice", "m")  # e0, the most urgent
    form = {"csrf_token": csrf(again.text), "preview": sealed_preview(again.text)}
    changed = lead.post("/bulk/accept", data=form)
    assert changed.status_code == 409
    assert "preview again" in changed.text
    assert desk.queue.list_items(ItemState.RESOLVED) == []

    form = {"csrf_token": csrf(shown.text), "preview": sealed_preview(shown.text)}
    done = lead.post("/bulk/accept", data=form)
    assert done.status_code == 303, done.text
    resolved = [i.escalation_id for i in desk.queue.list_items(ItemState.RESOLVED)]
    assert sorted(resolved) == ["e1", "e2"]
    assert ids(lead.get(done.headers["location"]).text, "batch") == ["e1", "e2"]


def test_no_preview_or_an_altered_one_accepts_nothing(desk: Desk) -> None:
    seeded(desk)
    lead = desk.client("lead")
    shown = preview(lead, min_confidence="0.97")
    token = csrf(shown.text)
    for sealed in ("", sealed_preview(shown.text)[:-2] + "xx"):
        refused = lead.post("/bulk/accept", data={"csrf_token": token, "preview": sealed})
        assert refused.status_code == 400
        assert '<code id="field">preview</code>' in refused.text
    nothing = preview(lead, min_confidence="0.999")
    assert 'id="preview-none"' in nothing.text
    assert 'id="bulk-accept"' not in nothing.text
    assert desk.queue.list_items(ItemState.RESOLVED) == []


def test_forms_without_the_csrf_token_are_refused(desk: Desk) -> None:
    seeded(desk)
    lead = desk.client("lead")
    shown = preview(lead, min_confidence="0.97")
    refused = lead.post("/bulk/accept", data={"preview": sealed_preview(shown.text)})
    assert refused.status_code == 403
    assert '<code id="field">csrf_token</code>' in refused.text
    assert desk.queue.list_items(ItemState.RESOLVED) == []

    bulk_accepted(desk, lead)
    refused = lead.post("/items/e1/revert", data={"reason": "wrong batch"})
    assert refused.status_code == 403
    assert desk.queue.get("e1").state is ItemState.RESOLVED


@pytest.mark.parametrize("who", ["alice", "viewer"])
def test_reviewers_and_viewers_get_no_controls_and_are_refused(desk: Desk, who: str) -> None:
    """No link, form or button; the pages and actions answer 403 with the role."""
    seeded(desk)
    lead = desk.client("lead")
    shown = preview(lead, min_confidence="0.97")
    sealed = sealed_preview(shown.text)
    other = desk.client(who)
    queue_page = other.get("/").text
    assert 'href="/bulk"' not in queue_page
    for path in ("/bulk", "/bulk?preview=1&model=m&min_confidence=0.97"):
        page = other.get(path)
        assert page.status_code == 403
        assert "may not call BulkAccept" in page.text
    token = csrf(queue_page)
    refused = other.post("/bulk/accept", data={"csrf_token": token, "preview": sealed})
    assert refused.status_code == 403
    assert desk.queue.list_items(ItemState.RESOLVED) == []

    batch_page = bulk_accepted(desk, lead)
    assert other.get(batch_page).status_code == 403
    item_page = other.get("/items/e1").text
    assert 'id="revert-form"' not in item_page
    refused = other.post("/items/e1/revert", data={"csrf_token": token, "reason": "no"})
    assert refused.status_code == 403
    assert f"{who} (roles: {'reviewer' if who == 'alice' else 'viewer'}) may not call Revert" in (
        html.unescape(refused.text)
    )
    assert desk.queue.get("e1").state is ItemState.RESOLVED


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"min_confidence": "high"}, "min_confidence"),
        ({"min_confidence": "1.5"}, "min_confidence"),
        ({"min_confidence": "nan"}, "min_confidence"),
        ({"min_confidence": ""}, "min_confidence"),
        ({"min_confidence": "0.9", "limit": "lots"}, "limit"),
        ({"min_confidence": "0.9", "limit": "5000"}, "limit"),
        ({"min_confidence": "0.9", "tier": "URGENT"}, "tier"),
        ({"min_confidence": "0.9", "model": ""}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(desk: Desk, asked: dict[str, str], field: str) -> None:
    seeded(desk)
    answer = preview(desk.client("lead"), **asked)
    assert answer.status_code == 400
    assert f'<code id="field">{field}</code>' in answer.text
    assert "Traceback" not in answer.text
    assert 'id="message"' in answer.text


def test_a_lead_reverts_one_resolution_with_a_reason(desk: Desk) -> None:
    """The item is open again; its page shows the reverted resolution with who, when
    and why; the batch page no longer lists it; a reason is required."""
    seeded(desk)
    lead = desk.client("lead")
    batch_page = bulk_accepted(desk, lead)
    desk.clock.advance(60.0)
    item_page = lead.get("/items/e1").text
    assert 'id="revert-form"' in item_page
    assert 'id="batch-link"' in item_page
    token = csrf(item_page)

    missing = lead.post("/items/e1/revert", data={"csrf_token": token, "reason": "  "})
    assert missing.status_code == 400
    assert '<code id="field">reason</code>' in missing.text
    assert desk.queue.get("e1").state is ItemState.RESOLVED

    done = lead.post("/items/e1/revert", data={"csrf_token": token, "reason": "wrong batch"})
    assert (done.status_code, done.headers["location"]) == (303, "/items/e1?reverted=1")
    assert desk.queue.get("e1").state is ItemState.OPEN
    page = lead.get(done.headers["location"]).text
    assert 'id="reverted"' in page
    assert 'id="revert-form"' not in page
    events = history(page)
    batch_id = urlsplit(batch_page).path.rsplit("/", 1)[1]
    resolved = next(
        e
        for e in events
        if f"resolved by lead: ACCEPT, class 1 dog, in bulk accept {batch_id}" in e
    )
    reverted = next(e for e in events if "reverted by lead: wrong batch" in e)
    assert events.index(resolved) < events.index(reverted)
    assert reverted[:19] != resolved[:19]  # the revert's own time, a minute later

    assert ids(lead.get(batch_page).text, "batch") == ["e2"]
    again = lead.post("/items/e1/revert", data={"csrf_token": token, "reason": "twice"})
    assert again.status_code == 400
    assert '<code id="field">escalation_id</code>' in again.text
