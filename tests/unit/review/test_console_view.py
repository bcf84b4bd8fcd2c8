"""What the console shows, pure: the model's raw probabilities and top classes, time
left, which inputs may be rendered, the history; the console's settings; and the
text fetch against a real HTTP server on loopback."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sidecar.errors import ConfigError
from sidecar.review.app import console_key
from sidecar.review.config import ReviewConfig
from sidecar.review.console import view
from sidecar.review.console.fetch import read_text
from sidecar.review.console.inputs import Shown, content_security_policy, kind_of
from sidecar.review.item import ItemState, ReviewItem
from sidecar.review.sla import Sla
from tests.console import serving_inputs
from tests.escalations import escalation

PREFIXES = ("https://inputs.example/review/",)


def test_probabilities_are_softmax_of_logits_or_as_sent() -> None:
    e = escalation("e1", logits=[0.5, 2.0, -1.0])
    assert sum(view.probabilities(e)) == pytest.approx(1.0)
    assert view.probabilities(e)[1] == pytest.approx(math.exp(2) / sum(map(math.exp, e.logits)))
    sent = replace(e, input_kind="PROBABILITIES", logits=[0.2, 0.7, 0.1])
    assert view.probabilities(sent) == pytest.approx([0.2, 0.7, 0.1])


def test_top_classes_carry_labels_most_probable_first() -> None:
    e = escalation(
        "e1", logits=[float(i) for i in range(8)], predicted_class=7, labels=list("abcdefgh")
    )
    assert [(c.index, c.label) for c in view.top_classes(e)] == [
        (7, "h"), (6, "g"), (5, "f"), (4, "e"), (3, "d"),
    ]  # fmt: skip
    unlabelled = escalation("e2")
    assert [c.label for c in view.top_classes(unlabelled)] == ["b", "0", "2"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(59.9, "59 s left"), (900, "15 min left"), (7260, "2 h 01 min left"),
     (90000, "1 d 1 h left"), (-130, "overdue by 2 min")],
)  # fmt: skip
def test_time_left_reads_as_a_person_would_say_it(seconds: float, shown: str) -> None:
    assert view.time_left(seconds) == shown


@pytest.mark.parametrize(
    ("ref", "kind"),
    [
        ("https://inputs.example/review/a/b.png", Shown.IMAGE),
        ("https://inputs.example/review/a/b.JPG", Shown.IMAGE),
        ("https://inputs.example/review/a/b.txt", Shown.TEXT),
        ("https://inputs.example/review/../admin/x.txt", Shown.REFERENCE),
        ("https://inputs.example/review/%2e%2e/admin", Shown.REFERENCE),
        ("https://inputs.example/other/b.png", Shown.REFERENCE),
        ("s3://inputs/e1", Shown.REFERENCE),
        ("", Shown.REFERENCE),
    ],
)
def test_only_inputs_under_an_allowed_prefix_are_rendered(ref: str, kind: Shown) -> None:
    assert kind_of(ref, PREFIXES) is kind
    assert kind_of(ref, ()) is Shown.REFERENCE


def test_the_policy_lists_exactly_the_prefixes_for_images() -> None:
    policy = content_security_policy(PREFIXES)
    assert "img-src 'self' https://inputs.example/review/;" in policy
    assert "'unsafe-inline'" not in policy


def test_history_dates_the_latest_raise_by_the_sla() -> None:
    """Decided, received, raised (dated by its new deadline less the tier's SLA), claimed."""
    item = ReviewItem(
        escalation=escalation("e1", created_at=100.0),
        state=ItemState.CLAIMED,
        priority=1,
        due_at=10_000.0,
        escalation_level=2,
        received_at=101.0,
        claimed_by="alice",
        claimed_at=9_000.0,
    )
    events = view.history(item, Sla())
    assert [e.at for e in events] == [100.0, 101.0, 10_000.0 - 7200.0, 9_000.0]
    assert "escalation level 2 (2 deadlines passed)" in events[2].what


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HITL_REVIEW_CONSOLE_INPUT_PREFIXES": "ftp://x/"}, "HITL_REVIEW_CONSOLE_INPUT_PREFIXES"),
        ({"HITL_REVIEW_CONSOLE_INPUT_PREFIXES": "https://x/ 'unsafe-inline'"}, "URL prefix"),
        (
            {"HITL_REVIEW_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/33"},
            "HITL_REVIEW_CONSOLE_TRUSTED_PROXIES",
        ),
        ({"HITL_REVIEW_CONSOLE_USER_HEADER": "X User"}, "HITL_REVIEW_CONSOLE_USER_HEADER"),
        ({"HITL_REVIEW_RATIONALE_REQUIRED": "sometimes"}, "HITL_REVIEW_RATIONALE_REQUIRED"),
        ({"HITL_REVIEW_CONSOLE_LISTEN": "nowhere"}, "HITL_REVIEW_CONSOLE_LISTEN"),
    ],
)
def test_a_bad_console_setting_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReviewConfig.load(env=env)


TEXT = "caf\u00e9 <b>".encode()
INPUTS = {
    "/a.txt": ("text/plain; charset=utf-8", TEXT),
    "/big.txt": ("text/plain", b"x" * 70_000),
    "/a.bin": ("application/octet-stream", TEXT),
}


@pytest.fixture
def inputs() -> Iterator[str]:
    """A text, a big text, a binary file and a redirect to the cloud's metadata address."""
    with serving_inputs(INPUTS, {"/moved.txt": "http://169.254.169.254/"}) as base:
        yield base


def test_a_text_input_is_fetched_capped_and_never_redirected(inputs: str) -> None:
    shown = read_text(f"{inputs}/a.txt")
    assert (shown.kind, shown.text) == (Shown.TEXT, "caf\u00e9 <b>")
    big = read_text(f"{inputs}/big.txt")
    assert (len(big.text), big.note) == (64 * 1024, "cut at 64 KiB")
    assert read_text(f"{inputs}/a.bin").note == "not shown: its type is application/octet-stream"
    assert read_text(f"{inputs}/none.txt").note == "not shown: HTTP 404"
    moved = read_text(f"{inputs}/moved.txt")
    assert (moved.kind, moved.note) == (Shown.REFERENCE, "not shown: HTTP 302")
    assert read_text("http://127.0.0.1:1/x.txt", timeout=0.5).kind is Shown.REFERENCE


def test_the_session_key_is_the_files_or_a_random_one(tmp_path: Path) -> None:
    """A key file under 32 bytes stops start-up naming the variable; without one the
    console signs with a random key for the process, and says so."""
    short = tmp_path / "console.key"
    short.write_text("short\n")
    with pytest.raises(ConfigError, match="HITL_REVIEW_CONSOLE_SECRET_FILE: the key is 5 bytes"):
        console_key(ReviewConfig(console_secret_file=short))
    short.write_text("k" * 40)
    assert console_key(ReviewConfig(console_secret_file=short)) == b"k" * 40
    with capture_logs() as logs:
        assert len(console_key(ReviewConfig())) == 32
    assert [log["event"] for log in logs] == ["review.console_ephemeral_secret"]
