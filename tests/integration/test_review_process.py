"""``hitl review serve`` as a real process, worked with the reviewer commands: submit,
next, resolve, list, export (loaded by the calibrators); refusals and bad arguments;
the overdue sweep with its log event and Prometheus metrics; two replicas on one
PostgreSQL database; start-up errors; SIGTERM."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from calibrators.data import load_dataset
from hitl_client.router import route_request
from sidecar.review.item import Verdict
from tests.artefacts import confident_logits
from tests.escalations import escalation
from tests.integration.conftest import (
    ReviewProcess,
    hitl_command,
    start_review,
    start_sidecar,
    wait_for,
)
from tests.postgres import dsn_for, fresh_schema

pytestmark = pytest.mark.integration


def escalations_file(path: Path, *records: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, once it exited 0."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    return result.stderr


def test_reviewer_workflow(review_queue: ReviewProcess, tmp_path: Path) -> None:
    """Submit, claim by urgency, resolve (refused for the wrong reviewer), list and export
    a file that hitl calibrate's loader reads as it is."""
    source = escalations_file(
        tmp_path / "escalations.jsonl",
        escalation("assisted", logits=[0.2, 1.0, -0.5]).to_dict(),
        escalation("primary", tier="HUMAN_PRIMARY", logits=[2.0, 0.1, 0.3]).to_dict(),
        escalation("audit", tier="AUTOMATED", reason="AUDIT_SAMPLE").to_dict(),
        escalation("", model="m").to_dict(),
    )
    submitted = review_queue.hitl("submit", str(source))
    assert submitted.returncode == 1  # one record rejected
    summary = json.loads(submitted.stdout)
    assert (summary["accepted"], summary["rejected"]) == (3, 1)
    assert summary["rejections"] == [{"escalation_id": "", "message": "escalation_id: is required"}]
    resent = json.loads(review_queue.hitl("submit", str(source)).stdout)
    assert (resent["duplicate"], resent["rejected"]) == (3, 1)

    first = ok(review_queue.hitl("next", who="alice"))
    assert (first["escalation_id"], first["state"], first["claimed_by"]) == (
        "primary",
        "CLAIMED",
        "alice",
    )
    assert first["escalation"]["logits"] == pytest.approx([2.0, 0.1, 0.3])
    second = ok(review_queue.hitl("next", "--model", "m", who="bob"))
    assert second["escalation_id"] == "assisted"
    stderr = refused(review_queue.hitl("release", "assisted", who="alice"))
    assert "FAILED_PRECONDITION: escalation_id 'assisted' is claimed by 'bob'" in stderr
    released = ok(review_queue.hitl("release", "assisted", who="bob"))
    assert (released["state"], released["claimed_by"]) == ("OPEN", "")
    assert ok(review_queue.hitl("next", "--model", "m", who="bob"))["escalation_id"] == "assisted"

    stderr = refused(review_queue.hitl("resolve", "primary", "--accept", who="bob"))
    assert "FAILED_PRECONDITION: escalation_id 'primary' is claimed by 'alice'" in stderr
    stderr = refused(review_queue.hitl("resolve", "nope", "--accept", who="bob"))
    assert "NOT_FOUND" in stderr
    stderr = refused(review_queue.hitl("resolve", "assisted", "--override", who="bob"))
    assert "INVALID_ARGUMENT: corrected_class" in stderr

    overridden = ok(
        review_queue.hitl(
            "resolve", "primary", "--override", "--class", "2",
            "--label", "c", "--rationale", "a chargeback, not a sale", who="alice",
        )
    )  # fmt: skip
    assert overridden["state"] == "RESOLVED"
    assert overridden["resolution"]["label_class"] == 2
    assert overridden["resolution"]["rationale"] == "a chargeback, not a sale"
    ok(review_queue.hitl("resolve", "assisted", "--accept", who="bob"))

    open_items = review_queue.hitl("list", "--state", "open")
    assert [json.loads(line)["escalation_id"] for line in open_items.stdout.splitlines()] == [
        "audit"
    ]
    resolved = review_queue.hitl("list", "--state", "resolved", "--tier", "HUMAN_PRIMARY")
    assert [json.loads(line)["escalation_id"] for line in resolved.stdout.splitlines()] == [
        "primary"
    ]

    out = tmp_path / "labelled" / "m.jsonl"
    report = ok(review_queue.hitl("export", "--out", str(out), "--model", "m"))
    assert (report["exported"], report["skipped"]) == (2, {})
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["escalation_id"], r["label"], r["verdict"]) for r in lines] == [
        ("primary", 2, "OVERRIDE"),
        ("assisted", 1, "ACCEPT"),
    ]
    dataset = load_dataset(out)
    assert dataset.labels.tolist() == [2, 1]
    assert dataset.logits[0] == pytest.approx([2.0, 0.1, 0.3])
    later = ok(review_queue.hitl("export", "--out", str(out), "--since", "2999-01-01T00:00:00Z"))
    assert later["exported"] == 0


def test_refusals_and_bad_arguments(review_queue: ReviewProcess) -> None:
    """Nothing to claim exits 1 with NOT_FOUND; bad arguments exit 2 before any call."""
    assert "NOT_FOUND: no open item" in refused(review_queue.hitl("next", who="alice"))
    assert "PERMISSION_DENIED: alice may not act for 'bob'" in refused(
        review_queue.hitl("next", "--for", "bob", who="alice")
    )
    anonymous = review_queue.hitl("list", who="nobody")
    assert "UNAUTHENTICATED: the bearer token belongs to no principal" in refused(anonymous)
    no_verdict = review_queue.hitl("resolve", "e1", who="alice")
    assert "one of the arguments --accept --override is required" in refused(no_verdict, 2)
    bad_since = review_queue.hitl("export", "--out", "x.jsonl", "--since", "yesterday")
    assert "neither Unix seconds nor an ISO 8601 time" in refused(bad_since, 2)
    bad_state = review_queue.hitl("list", "--state", "pending")
    assert "invalid choice" in refused(bad_state, 2)


def test_no_queue_listening_is_reported(tmp_path: Path) -> None:
    """A reviewer command against a dead address exits 1 with UNAVAILABLE."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        hitl_command("review", "list", "--target", f"127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "UNAVAILABLE" in refused(result)


def test_overdue_items_rise_and_are_measured(tmp_path: Path) -> None:
    """With a 1 s SLA and a 0.2 s sweep: the item's level rises, review.overdue is logged
    with its trace id, and Prometheus shows the counter and the items gauge."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    queue = start_review(
        tmp_path / "review",
        "--sla", "HUMAN_PRIMARY=1", "--sweep-seconds", "0.2",
        "--metrics-addr", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    try:
        with queue.client() as client:
            client.submit([escalation("late", tier="HUMAN_PRIMARY"), escalation("calm")])
            wait_for(
                lambda: client.list_items(tier="HUMAN_PRIMARY")[0].escalation_level >= 1,
                10.0,
                "the overdue item to rise a level",
            )
        (event, *_) = [e for e in queue.log() if e["event"] == "review.overdue"]
        fields = ("escalation_id", "model", "tier", "escalation_level", "trace_id", "level")
        assert {k: event[k] for k in fields} == {
            "escalation_id": "late",
            "model": "m",
            "tier": "HUMAN_PRIMARY",
            "escalation_level": 1,
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "level": "warning",
        }
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

        def scraped() -> bool:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as page:
                text = page.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    samples[sample.name, frozenset(sample.labels.items())] = sample.value
            return ("hitl_review_overdue_total", frozenset({("tier", "HUMAN_PRIMARY")})) in {
                (name, frozenset((k, v) for k, v in labels if k == "tier"))
                for name, labels in samples
            }

        wait_for(scraped, 10.0, "hitl_review_overdue_total on the scrape endpoint")
        overdue = [
            value
            for (name, labels), value in samples.items()
            if name == "hitl_review_overdue_total" and ("tier", "HUMAN_PRIMARY") in labels
        ]
        assert overdue
        assert overdue[0] >= 1
        open_assisted = [
            value
            for (name, labels), value in samples.items()
            if name == "hitl_review_items"
            and {("tier", "HUMAN_ASSISTED"), ("state", "open")} <= labels
        ]
        assert open_assisted == [1.0]
    finally:
        assert queue.stop() == 0


def test_replicas_share_one_postgresql_database(tmp_path: Path) -> None:
    """Two queue processes on one PostgreSQL schema: what one accepts the other serves,
    a resend to either is DUPLICATE, and one claim never comes back from the other."""
    with fresh_schema() as schema:
        db = dsn_for(schema)
        one = start_review(tmp_path / "one", db=db)
        two = start_review(tmp_path / "two", db=db, tokens=one.tokens)
        try:
            with one.client() as first, two.client() as second:
                assert [r.status.value for r in first.submit([escalation("e1")])] == ["ACCEPTED"]
                assert [r.status.value for r in second.submit([escalation("e1")])] == ["DUPLICATE"]
            with two.client("bob") as bob:
                assert bob.claim().escalation_id == "e1"
            assert "NOT_FOUND" in refused(one.hitl("next", who="alice"))
        finally:
            assert one.stop() == 0
            assert two.stop() == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--db", "mysql://db/review"], "HITL_REVIEW_DB must be sqlite:PATH or postgresql://"),
        (["--sla", "HUMAN_PRIMARY=soon"], "HITL_REVIEW_SLA: HUMAN_PRIMARY='soon'"),
        (["--listen", "7432"], "HITL_REVIEW_LISTEN must be HOST:PORT"),
        (
            ["--console-listen", "127.0.0.1:0", "--console-secret-file", "/nonexistent/key"],
            "HITL_REVIEW_CONSOLE_SECRET_FILE: /nonexistent/key is not a readable file",
        ),
        (["--console-input-prefixes", "file:///etc/"], "HITL_REVIEW_CONSOLE_INPUT_PREFIXES"),
    ],
)
def test_bad_configuration_exits_2(tmp_path: Path, arguments: list[str], message: str) -> None:
    """A bad setting stops start-up with exit 2 and a message naming the variable."""
    result = subprocess.run(
        hitl_command("review", "serve", "--db", f"sqlite:{tmp_path / 'q.db'}", *arguments),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert message in refused(result, 2)


def test_a_taken_port_is_refused(review_queue: ReviewProcess, tmp_path: Path) -> None:
    """A second queue on a port already served fails (no silent SO_REUSEPORT sharing)."""
    result = subprocess.run(
        hitl_command(
            "review", "serve", "--listen", review_queue.address,
            "--db", f"sqlite:{tmp_path / 'other.db'}",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert "cannot listen on" in refused(result, 2)


def test_sigterm_stops_gracefully(review_queue: ReviewProcess) -> None:
    """SIGTERM: exit 0 after review.stopping and review.stopped are logged."""
    assert review_queue.stop() == 0
    events = [e["event"] for e in review_queue.log()]
    assert events[0] == "review.listening"
    assert events[-2:] == ["review.stopping", "review.stopped"]


def test_sidecar_escalations_reach_the_queue(
    tmp_path: Path, policy_file: Path, review_queue: ReviewProcess
) -> None:
    """A real sidecar with ``--sink review://`` this queue: what Route escalated arrives
    once each, with its decision context, and a reviewer's labels export for fitting."""
    sidecar = start_sidecar(tmp_path, policy_file, *review_queue.sink())
    try:
        # Before the policy loads, decisions are fallbacks with no class to accept.
        sidecar.wait_serving()
        with sidecar.client() as client:
            escalated = {
                client.route(
                    route_request(f"r{i}", "m", confident_logits(i % 3, 0.3))
                ).escalation_id
                for i in range(6)
            }
        assert "" not in escalated
        with review_queue.client() as queue:
            wait_for(
                lambda: len(queue.list_items()) == len(escalated), 20.0, "escalations in the queue"
            )
            items = queue.list_items()
            assert {i.escalation_id for i in items} == escalated
            assert {i.escalation.model for i in items} == {"m"}
        with review_queue.client("alice") as alice:
            for _ in items:
                item = alice.claim()
                alice.resolve(item.escalation_id, Verdict.ACCEPT)
        out = tmp_path / "labelled.jsonl"
        assert ok(review_queue.hitl("export", "--out", str(out)))["exported"] == len(escalated)
        assert load_dataset(out).rows == len(escalated)
    finally:
        sidecar.stop()
