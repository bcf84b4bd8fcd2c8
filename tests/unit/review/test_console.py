"""The reviewers' web console in process (Starlette's TestClient) over the real queue
on a real SQLite store: sign-in and its cookie, CSRF, the trusted proxy header, roles
(a viewer sees but may not act, a reviewer may not act on another's claim), the
rationale rule, the evidence and time to label recorded, release, the JSON API, and
bad input answered with its status and the field named."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from sidecar.clock import FakeClock
from sidecar.review.config import ReviewConfig, networks
from sidecar.review.console.app import Console
from sidecar.review.console.inputs import InputView, Shown
from sidecar.review.console.sessions import COOKIE, Sessions
from sidecar.review.item import ItemState, Verdict
from sidecar.review.queue import ReviewQueue
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore, open_store
from tests.console import csrf, sign_in
from tests.escalations import escalation
from tests.reviewers import add_principals

PROXY = "10.9.0.7"
KEY = b"k" * 32
LABELS = ["cat", "dog", "eel"]


@dataclass
class Desk:
    queue: ReviewQueue
    store: ReviewStore
    clock: FakeClock
    tokens: dict[str, str]
    config: ReviewConfig
    fetched: list[str]

    def client(self, who: str | None = None, host: str = "testclient") -> TestClient:
        """A browser from host, signed in as who (None: not signed in)."""
        sessions = Sessions(KEY, secure=False)
        app = Console(self.queue, self.config, sessions, fetch=self.fetch).application()
        client = TestClient(app, client=(host, 50000), follow_redirects=False)
        if who is not None:
            answer = sign_in(client, self.tokens[who])
            assert answer.status_code == 303, answer.text
        return client

    def fetch(self, url: str) -> InputView:
        self.fetched.append(url)
        return InputView(url, Shown.TEXT, text="<b>the refund request</b>")

    def submit(self, *escalation_ids: str, **fields: Any) -> None:
        self.queue.submit([escalation(e, labels=LABELS, **fields) for e in escalation_ids])


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    store = open_store(f"sqlite:{tmp_path / 'review.db'}")
    clock = FakeClock()
    config = ReviewConfig(
        db=f"sqlite:{tmp_path / 'review.db'}",
        console_listen="127.0.0.1:0",
        console_trusted_proxies=networks("10.9.0.0/16", "test"),
        console_input_prefixes=("http://inputs.test/",),
    )
    yield Desk(ReviewQueue(store, clock, Sla()), store, clock, add_principals(store), config, [])
    store.close()


def form_fields(page: str, form_id: str) -> dict[str, str]:
    """The hidden fields of the form with form_id on page."""
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S)
    assert form, page
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))
    return {name: value.replace("&#34;", '"').replace("&amp;", "&") for name, value in fields}


def claim_and_open(client: TestClient) -> tuple[str, str]:
    """Claim next as the client's reviewer: (escalation_id, the item page)."""
    queue_page = client.get("/")
    claimed = client.post("/claim", data={"csrf_token": csrf(queue_page.text)})
    assert claimed.status_code == 303, claimed.text
    location = claimed.headers["location"]
    return location.rsplit("/", 1)[1], client.get(location).text


def test_sign_in_sets_a_strict_http_only_session_cookie(desk: Desk) -> None:
    """The token signs in; the cookie is HttpOnly, SameSite=Strict, and Secure only
    over TLS; a wrong token is 401 naming the token; signing out ends the session."""
    browser = desk.client()
    assert browser.get("/").headers["location"] == "/signin"
    page = browser.get("/signin")
    refused = browser.post("/signin", data={"token": "nope", "csrf_token": csrf(page.text)})
    assert refused.status_code == 401
    assert "token: belongs to no principal" in refused.text
    answer = browser.post(
        "/signin", data={"token": desk.tokens["alice"], "csrf_token": csrf(page.text)}
    )
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie
    queue_page = browser.get("/")
    assert queue_page.status_code == 200
    assert "alice" in queue_page.text
    assert browser.post("/signout", data={"csrf_token": csrf(queue_page.text)}).status_code == 303
    assert browser.get("/").headers["location"] == "/signin"
    secure = Sessions(KEY, secure=True).cookie_options()
    assert (secure["secure"], secure["httponly"], secure["samesite"]) == (True, True, "strict")


def test_every_response_carries_a_strict_content_security_policy(desk: Desk) -> None:
    """Scripts and styles from the console only, images also from the input prefixes."""
    headers = desk.client().get("/signin").headers
    policy = headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "img-src 'self' http://inputs.test/;" in policy
    assert "frame-ancestors 'none'" in policy
    assert headers["x-content-type-options"] == "nosniff"


def test_a_form_without_the_session_csrf_token_is_refused(desk: Desk) -> None:
    """A POST without the token, with another session's, or signing in without one:
    403 naming csrf_token; nothing is claimed."""
    desk.submit("e1")
    alice = desk.client("alice")
    for data in ({}, {"csrf_token": "forged"}):
        answer = alice.post("/claim", data=data)
        assert answer.status_code == 403
        assert "csrf_token" in answer.text
    other = csrf(desk.client("bob").get("/").text)
    assert alice.post("/claim", data={"csrf_token": other}).status_code == 403
    assert desk.client().post("/signin", data={"token": desk.tokens["alice"]}).status_code == 403
    assert desk.queue.get("e1").state is ItemState.OPEN


def test_the_trusted_header_counts_only_from_a_listed_proxy(desk: Desk) -> None:
    """From a listed proxy the user header names the principal; from anyone else it is
    ignored (the browser must sign in); a name no principal has is 401."""
    header = {"X-Forwarded-User": "alice"}
    via_proxy = desk.client(host=PROXY).get("/", headers=header)
    assert via_proxy.status_code == 200
    assert "single sign-on" in via_proxy.text
    assert "alice" in via_proxy.text
    direct = desk.client(host="192.0.2.1").get("/", headers=header)
    assert (direct.status_code, direct.headers["location"]) == (303, "/signin")
    stranger = desk.client(host=PROXY).get("/", headers={"X-Forwarded-User": "mallory"})
    assert stranger.status_code == 401
    assert "X-Forwarded-User: 'mallory' names no principal" in html.unescape(stranger.text)


def test_a_proxy_signed_reviewer_acts_with_the_csrf_token(desk: Desk) -> None:
    """Behind the proxy the browser still gets a session cookie for its CSRF token."""
    desk.submit("e1")
    browser = desk.client(host=PROXY)
    browser.headers["X-Forwarded-User"] = "alice"
    page = browser.get("/")
    assert browser.post("/claim", data={}).status_code == 403
    assert browser.post("/claim", data={"csrf_token": csrf(page.text)}).status_code == 303
    assert desk.queue.get("e1").claimed_by == "alice"


def test_the_queue_page_lists_open_items_most_urgent_first(desk: Desk) -> None:
    """Open items in the store's claim order with time left, tier and rule; filters by
    tier and model; the reviewer's own claims apart."""
    desk.queue.submit(
        [
            escalation("assisted", labels=LABELS),
            escalation("primary", tier="HUMAN_PRIMARY", reason="RULE", rule_id="big-amount"),
            escalation("audit", tier="AUTOMATED"),
        ]
    )
    page = desk.client("alice").get("/").text
    order = re.findall(r'<a href="/items/([^"]+)">', page)
    assert order == ["primary", "assisted", "audit"]
    assert "15 min left" in page  # HUMAN_PRIMARY's SLA, as rendered (live in the page)
    assert "big-amount" in page
    filtered = desk.client("alice").get("/", params={"tier": "AUTOMATED"}).text
    assert re.findall(r'<a href="/items/([^"]+)">', filtered) == ["audit"]
    bad = desk.client("alice").get("/", params={"tier": "URGENT"})
    assert bad.status_code == 400
    assert "tier" in bad.text


def test_the_item_page_shows_the_suggestion_input_and_history(desk: Desk) -> None:
    """The predicted label, the top classes with the model's raw probabilities and their
    labels, the input fetched (escaped) from an allowed prefix, the context, history."""
    desk.submit("e1", input_ref="http://inputs.test/e1.txt", rule_id="r-7", reason="RULE")
    alice = desk.client("alice")
    escalation_id, page = claim_and_open(alice)
    assert escalation_id == "e1"
    assert desk.fetched == ["http://inputs.test/e1.txt"]
    assert "&lt;b&gt;the refund request&lt;/b&gt;" in page
    assert re.search(r'id="predicted">dog<', page)
    top = re.findall(r'<td class="key">(\d+)</td><td>(\w+)</td>', page)
    assert top == [("1", "dog"), ("0", "cat"), ("2", "eel")]
    assert "78.6 %" in page  # softmax([0.5, 2.0, -1.0])[1]
    assert "r-7" in page
    assert "c-19" in page  # the context
    assert "claimed by alice" in page
    desk.submit("pic", input_ref="http://inputs.test/pic.png")
    desk.submit("elsewhere", input_ref="http://other.test/e.txt")
    assert '<img class="input" src="http://inputs.test/pic.png"' in alice.get("/items/pic").text
    assert 'id="input-ref">http://other.test/e.txt<' in alice.get("/items/elsewhere").text
    assert desk.fetched == ["http://inputs.test/e1.txt"]  # neither the image nor elsewhere


def test_accept_records_the_evidence_and_a_clamped_time_to_label(desk: Desk) -> None:
    """A verdict records the evidence the page showed (sealed by the server) and the
    page's time to label, clamped to the time since the claim."""
    desk.submit("e1")
    alice = desk.client("alice")
    _, page = claim_and_open(alice)
    desk.clock.advance(20)
    fields = form_fields(page, "accept-form")
    answer = alice.post(
        "/items/e1/resolve", data={**fields, "time_to_label_seconds": "900", "rationale": ""}
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/?done=e1")
    resolution = desk.queue.get("e1").resolution
    assert resolution is not None
    assert (resolution.verdict, resolution.label_class, resolution.label) == (
        Verdict.ACCEPT,
        1,
        "b",
    )
    assert resolution.time_to_label_seconds == 20.0  # 900 claimed, 20 since the claim
    evidence = json.loads(resolution.evidence)
    assert evidence["escalation_id"] == "e1"
    assert [c["label"] for c in evidence["top_classes"]] == ["dog", "cat", "eel"]
    assert evidence["input_ref"] == "s3://inputs/e1"
    assert evidence["input_rendered"] == "reference"
    assert evidence["sla_seconds_left"] == pytest.approx(7200.0)
    assert evidence["console"].startswith("hitl-review-console/")


def test_override_needs_a_class_and_a_rationale(desk: Desk) -> None:
    """An override without a rationale is 400 naming rationale (the default rule),
    without a class 400 naming corrected_class; with both it records the class's label
    and the measured time."""
    desk.submit("e1")
    alice = desk.client("alice")
    _, page = claim_and_open(alice)
    fields = form_fields(page, "override-form")
    missing = alice.post("/items/e1/resolve", data={**fields, "corrected_class": "2"})
    assert missing.status_code == 400
    assert "rationale" in missing.text
    no_class = alice.post("/items/e1/resolve", data={**fields, "rationale": "refund"})
    assert no_class.status_code == 400
    assert 'id="field">corrected_class<' in no_class.text
    junk = alice.post(
        "/items/e1/resolve", data={**fields, "corrected_class": "two", "rationale": "x"}
    )
    assert junk.status_code == 400
    assert "corrected_class" in junk.text
    desk.clock.advance(30)
    done = alice.post(
        "/items/e1/resolve",
        data={
            **fields,
            "corrected_class": "2",
            "rationale": "refund",
            "time_to_label_seconds": "4.5",
        },
    )
    assert done.status_code == 303
    resolution = desk.queue.get("e1").resolution
    assert resolution is not None
    assert (resolution.verdict, resolution.label_class, resolution.label) == (
        Verdict.OVERRIDE,
        2,
        "eel",
    )
    assert (resolution.rationale, resolution.time_to_label_seconds) == ("refund", 4.5)


@pytest.mark.parametrize(
    ("rule", "accept_ok", "override_ok"), [("always", False, False), ("never", True, True)]
)
def test_the_rationale_rule_is_configurable(
    desk: Desk, rule: str, accept_ok: bool, override_ok: bool
) -> None:
    desk.config = replace(desk.config, rationale_required=rule)
    desk.submit("e1", "e2")
    alice = desk.client("alice")
    _, page = claim_and_open(alice)
    accepted = alice.post("/items/e1/resolve", data=form_fields(page, "accept-form"))
    assert (accepted.status_code == 303) is accept_ok
    if accept_ok:
        _, page = claim_and_open(alice)
    override = {**form_fields(page, "override-form"), "corrected_class": "0"}
    item = override["evidence"]
    escalation_id = "e2" if accept_ok else "e1"
    assert item
    assert (
        alice.post(f"/items/{escalation_id}/resolve", data=override).status_code == 303
    ) is override_ok


def test_the_evidence_cannot_be_altered_or_moved(desk: Desk) -> None:
    """A form's evidence is sealed for its item: altered, or another item's, is 400."""
    desk.submit("e1", "e2")
    alice = desk.client("alice")
    _, first = claim_and_open(alice)
    claim_and_open(alice)
    fields = form_fields(first, "accept-form")
    altered = alice.post("/items/e1/resolve", data={**fields, "evidence": fields["evidence"] + "x"})
    assert altered.status_code == 400
    assert 'id="field">evidence<' in altered.text
    moved = alice.post("/items/e2/resolve", data=fields)
    assert moved.status_code == 400
    assert "another item" in moved.text
    assert desk.queue.get("e2").resolution is None


def test_a_viewer_sees_but_may_not_act(desk: Desk) -> None:
    """A viewer gets the queue and an item page without actions; any action is 403."""
    desk.submit("e1")
    viewer = desk.client("viewer")
    page = viewer.get("/").text
    assert "claim-next" not in page
    item_page = viewer.get("/items/e1")
    assert item_page.status_code == 200
    assert "accept-form" not in item_page.text
    token = csrf(page)
    with capture_logs() as logs:
        refused = viewer.post("/claim", data={"csrf_token": token})
    assert refused.status_code == 403
    assert "viewer (roles: viewer) may not call Claim" in refused.text
    assert [log["event"] for log in logs] == ["review.refused"]
    assert viewer.post("/items/e1/release", data={"csrf_token": token}).status_code == 403


def test_a_reviewer_acting_on_anothers_claim_gets_409(desk: Desk) -> None:
    desk.submit("e1")
    alice, bob = desk.client("alice"), desk.client("bob")
    _, page = claim_and_open(alice)
    bob_page = bob.get("/items/e1").text
    assert "Claimed by alice" in bob_page
    fields = {**form_fields(page, "accept-form"), "csrf_token": csrf(bob_page)}
    answer = bob.post("/items/e1/resolve", data=fields)
    assert answer.status_code == 409
    assert (
        "escalation_id &#39;e1&#39; is claimed by &#39;alice&#39;, not &#39;bob&#39;" in answer.text
    )
    release = bob.post("/items/e1/release", data={"csrf_token": csrf(bob_page)})
    assert release.status_code == 409


def test_release_gives_the_item_back(desk: Desk) -> None:
    """Skip: the item is open again, and bob's claim next takes it."""
    desk.submit("e1")
    alice = desk.client("alice")
    _, page = claim_and_open(alice)
    answer = alice.post("/items/e1/release", data=form_fields(page, "release-form"))
    assert (answer.status_code, answer.headers["location"]) == (303, "/")
    assert desk.queue.get("e1").state is ItemState.OPEN
    assert claim_and_open(desk.client("bob"))[0] == "e1"


def test_bad_inputs_are_named_and_nothing_leaks(desk: Desk) -> None:
    """Unknown item 404, nothing to claim 404, a huge body 413, an unknown verdict 400;
    an error never shows a traceback."""
    alice = desk.client("alice")
    token = csrf(alice.get("/").text)
    missing = alice.get("/items/nope")
    assert missing.status_code == 404
    assert "no such item" in missing.text
    assert alice.post("/claim", data={"csrf_token": token}).status_code == 404
    huge = alice.post("/claim", data={"csrf_token": token, "model": "m" * 70000})
    assert huge.status_code == 413
    desk.submit("e1")
    alice.post("/claim", data={"csrf_token": token})
    odd = alice.post("/items/e1/resolve", data={"csrf_token": token, "verdict": "MAYBE"})
    assert odd.status_code == 400
    assert 'id="field">verdict<' in odd.text
    for page in (missing.text, odd.text):
        assert "Traceback" not in page


def test_an_unexpected_failure_is_a_bare_500(desk: Desk) -> None:
    """An internal error is logged with its traceback and answered 500 without one."""
    alice = desk.client("alice")

    def broken(*_: Any) -> None:
        raise RuntimeError("secret detail")

    desk.queue.list_items = broken  # type: ignore[method-assign, assignment]
    with capture_logs() as logs:
        answer = alice.get("/")
    assert answer.status_code == 500
    assert "secret detail" not in answer.text
    assert "Traceback" not in answer.text
    assert logs[-1]["event"] == "review.console_failed"


def test_the_json_api_takes_a_bearer_token(desk: Desk) -> None:
    """Claim, resolve and release over JSON with a bearer token (no cookie, no CSRF),
    under the same roles and validation."""
    desk.submit("e1", "e2")
    api = desk.client()
    alice = {"Authorization": f"Bearer {desk.tokens['alice']}"}
    assert api.post("/api/claim", json={}).status_code == 401
    viewer = {"Authorization": f"Bearer {desk.tokens['viewer']}"}
    assert api.post("/api/claim", json={}, headers=viewer).status_code == 403
    listed = api.get("/api/items", params={"state": "open"}, headers=viewer).json()
    assert [item["escalation_id"] for item in listed["items"]] == ["e1", "e2"]
    claimed = api.post("/api/claim", json={"model": "m"}, headers=alice).json()
    assert (claimed["escalation_id"], claimed["claimed_by"]) == ("e1", "alice")
    bad = api.post(
        "/api/items/e1/resolve",
        json={"verdict": "OVERRIDE", "corrected_class": 9, "rationale": "x"},
        headers=alice,
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "corrected_class"
    not_object = api.post(
        "/api/items/e1/resolve",
        content=b"[1]",
        headers={**alice, "content-type": "application/json"},
    )
    assert (not_object.status_code, not_object.json()["error"]["field"]) == (400, "body")
    desk.clock.advance(12)
    done = api.post(
        "/api/items/e1/resolve",
        json={"verdict": "ACCEPT", "time_to_label_seconds": 3.0, "evidence": {"bot": True}},
        headers=alice,
    ).json()
    assert done["resolution"]["time_to_label_seconds"] == 3.0
    assert json.loads(done["resolution"]["evidence"]) == {"bot": True}
    api.post("/api/claim", json={}, headers=alice)
    released = api.post("/api/items/e2/release", json={}, headers=alice).json()
    assert (released["state"], released["claimed_by"]) == ("OPEN", "")


def test_reviewer_quality_is_for_leads_and_viewers(desk: Desk) -> None:
    """The quality page and its JSON over the window's resolutions; a reviewer may not
    see them; a bad window is named."""
    desk.submit("e1", "e2")
    api = desk.client()
    alice = {"Authorization": f"Bearer {desk.tokens['alice']}"}
    for _ in range(2):
        claimed = api.post("/api/claim", json={}, headers=alice).json()
        desk.clock.advance(30)
        api.post(
            f"/api/items/{claimed['escalation_id']}/resolve",
            json={"verdict": "ACCEPT"},
            headers=alice,
        )
    desk.clock.advance(1)  # the window is [since, until): until defaults to now
    viewer = {"Authorization": f"Bearer {desk.tokens['viewer']}"}
    report = api.get("/api/quality", headers=viewer).json()
    assert report["reviewers"]["alice"]["items"] == 2
    assert report["reviewers"]["alice"]["median_seconds"] == pytest.approx(30.0)
    assert api.get("/api/quality", headers=alice).status_code == 403
    bad = api.get("/api/quality", params={"since": "yesterday"}, headers=viewer)
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "since")
    page = desk.client("viewer").get("/quality")
    assert page.status_code == 200
    assert "alice" in page.text
    assert "No reviewer departs from the pool" in page.text


def test_a_lead_bulk_accepts_and_reverts_through_the_json_api(desk: Desk) -> None:
    """Each item a bulk accept takes is its own resolution with the batch id; a lead
    reverts one; a reviewer may do neither."""
    desk.submit("e1", "e2")
    api = desk.client()
    lead = {"Authorization": f"Bearer {desk.tokens['lead']}"}
    alice = {"Authorization": f"Bearer {desk.tokens['alice']}"}
    wanted = {"model": "m", "min_confidence": 0.0}
    assert api.post("/api/bulk-accept", json=wanted, headers=alice).status_code == 403
    dry = api.post("/api/bulk-accept", json={**wanted, "dry_run": True}, headers=lead).json()
    assert [item["state"] for item in dry["items"]] == ["OPEN", "OPEN"]
    done = api.post("/api/bulk-accept", json=wanted, headers=lead).json()
    assert [item["resolution"]["verdict"] for item in done["items"]] == ["ACCEPT", "ACCEPT"]
    assert all(done["batch_id"] in item["resolution"]["rationale"] for item in done["items"])
    bad = api.post("/api/bulk-accept", json={"model": "m"}, headers=lead)
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "min_confidence")
    refused = api.post("/api/items/e1/revert", json={"reason": "x"}, headers=alice)
    assert refused.status_code == 403
    reverted = api.post("/api/items/e1/revert", json={"reason": "wrong batch"}, headers=lead)
    assert (reverted.status_code, reverted.json()["state"]) == (200, "OPEN")
    assert [r.reason for r in desk.queue.reverts("e1")] == ["wrong batch"]
