"""What a verdict records and who may give it (pure), and the checks on a verdict."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from sidecar.errors import InvalidRequest
from sidecar.review.errors import ItemConflict
from sidecar.review.item import ItemState, Resolution, ReviewItem, Verdict
from sidecar.review.resolution import ReviewerVerdict, release, settle
from sidecar.review.validation import check_verdict
from tests.escalations import escalation

NOW = 1_800_000_100.0
HELD = ReviewItem(
    escalation=escalation("e1"),
    state=ItemState.CLAIMED,
    priority=1,
    due_at=NOW + 7000,
    escalation_level=0,
    received_at=NOW - 200,
    claimed_by="alice",
    claimed_at=NOW - 100,
    lease_expires_at=NOW + 200,
)


def verdict(verdict: Verdict | None = Verdict.ACCEPT, **kw: object) -> ReviewerVerdict:
    return ReviewerVerdict("e1", "alice", verdict, **kw)  # type: ignore[arg-type]


def test_accept_labels_the_predicted_class() -> None:
    """ACCEPT: predicted class and label; time to label from the claim."""
    assert settle(HELD, verdict(rationale="ok"), NOW) == Resolution(
        "alice", Verdict.ACCEPT, 1, "b", "ok", 100.0, NOW
    )


@pytest.mark.parametrize(
    ("corrected_class", "corrected_label", "expected"),
    [(2, "c", (2, "c")), (0, "", (0, ""))],
)
def test_override_labels_what_the_reviewer_gave(
    corrected_class: int | None, corrected_label: str, expected: tuple[int, str]
) -> None:
    """OVERRIDE: the reviewer's class, with its label when given."""
    answer = verdict(
        Verdict.OVERRIDE, corrected_class=corrected_class, corrected_label=corrected_label
    )
    resolution = settle(HELD, answer, NOW)
    assert (resolution.label_class, resolution.label) == expected
    assert resolution.verdict is Verdict.OVERRIDE


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"corrected_class": 1}, "corrected_class"), ({"corrected_label": "b"}, "corrected_label")],
)
def test_override_to_the_prediction_is_refused(kw: dict[str, object], field: str) -> None:
    """Overriding with the predicted class (or label) is an ACCEPT in disguise: refused."""
    with pytest.raises(InvalidRequest) as raised:
        settle(HELD, verdict(Verdict.OVERRIDE, **kw), NOW)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"corrected_label": "zebra"}, "an override needs the true class (0 to 2)"),
        ({"corrected_class": 3}, "3 is not a class of this item (0 to 2)"),
        ({"corrected_class": 999, "corrected_label": "c"}, "999 is not a class of this item"),
    ],
)
def test_an_override_names_one_of_the_items_classes(kw: dict[str, object], message: str) -> None:
    """A label alone (which could never be fitted on) or a class beyond the item's
    logits is refused, naming corrected_class."""
    with pytest.raises(InvalidRequest, match=re.escape(message)) as raised:
        settle(HELD, verdict(Verdict.OVERRIDE, **kw), NOW)
    assert raised.value.field == "corrected_class"


def test_reviewers_time_wins() -> None:
    """A time to label measured by the reviewer's tool is kept as given."""
    assert settle(HELD, verdict(time_to_label_seconds=7.5), NOW).time_to_label_seconds == 7.5


@pytest.mark.parametrize(
    ("item", "reviewer", "message"),
    [
        (replace(HELD, claimed_by="", state=ItemState.OPEN), "alice", "not claimed"),
        (HELD, "bob", "is claimed by 'alice', not 'bob'"),
        (replace(HELD, state=ItemState.OPEN), "bob", "was last claimed by 'alice'"),
        (
            replace(
                HELD,
                state=ItemState.RESOLVED,
                resolution=Resolution("carol", Verdict.ACCEPT, 1, "b", "", 1.0, NOW),
            ),
            "alice",
            "already resolved by 'carol'",
        ),
    ],
)
def test_who_may_not_resolve(item: ReviewItem, reviewer: str, message: str) -> None:
    """Never claimed, held (or last held) by another, or resolved: ItemConflict saying which."""
    with pytest.raises(ItemConflict, match=message):
        settle(item, replace(verdict(), reviewer=reviewer), NOW)


def test_expired_lease_does_not_stop_its_holder() -> None:
    """The lease ran out and nobody else claimed: the holder's verdict stands."""
    expired = replace(HELD, state=ItemState.OPEN, lease_expires_at=NOW - 1)
    assert settle(expired, verdict(), NOW).reviewer == "alice"


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (ReviewerVerdict("", "alice", Verdict.ACCEPT), "escalation_id"),
        (ReviewerVerdict("e1", "", Verdict.ACCEPT), "reviewer"),
        (ReviewerVerdict("e1", "a" * 129, Verdict.ACCEPT), "reviewer"),
        (verdict(None), "verdict"),
        (verdict(Verdict.OVERRIDE), "corrected_class"),
        (verdict(corrected_class=2), "corrected_class"),
        (verdict(corrected_label="c"), "corrected_label"),
        (verdict(Verdict.OVERRIDE, corrected_class=-2), "corrected_class"),
        (verdict(rationale="x" * 20000), "rationale"),
        (verdict(time_to_label_seconds=-1.0), "time_to_label_seconds"),
        (verdict(time_to_label_seconds=math.inf), "time_to_label_seconds"),
        (verdict(evidence="not json"), "evidence"),
        (verdict(evidence='["a list"]'), "evidence"),
        (verdict(evidence='{"x": "' + "y" * 16400 + '"}'), "evidence"),
    ],
)
def test_bad_verdicts_name_their_field(answer: ReviewerVerdict, field: str) -> None:
    """Every malformed verdict is InvalidRequest naming the proto field."""
    with pytest.raises(InvalidRequest) as raised:
        check_verdict(answer)
    assert raised.value.field == field


def test_an_override_takes_the_label_of_its_class_when_labels_are_known() -> None:
    """With the model's labels on the escalation, an override's label is its class's:
    filled in when not given, refused when it names another."""
    labelled = replace(HELD, escalation=escalation("e1", labels=["cat", "dog", "eel"]))
    assert settle(labelled, verdict(Verdict.OVERRIDE, corrected_class=2), NOW).label == "eel"
    with pytest.raises(InvalidRequest, match="'dog' is not class 2's 'eel'") as raised:
        settle(labelled, verdict(Verdict.OVERRIDE, corrected_class=2, corrected_label="dog"), NOW)
    assert raised.value.field == "corrected_label"


def test_the_evidence_is_recorded_with_the_resolution() -> None:
    shown = '{"top": [[1, 0.6]], "shown_at": 12.5}'
    assert settle(HELD, verdict(evidence=shown), NOW).evidence == shown


def test_only_the_holder_releases() -> None:
    """The holder (also after their lease ran out, while nobody else claimed it) may
    release; anyone else, a resolved item or one never claimed: ItemConflict."""
    release(HELD, "alice")
    release(replace(HELD, state=ItemState.OPEN, lease_expires_at=NOW - 1), "alice")
    with pytest.raises(ItemConflict, match="is claimed by 'alice', not 'bob'"):
        release(HELD, "bob")
    with pytest.raises(ItemConflict, match="is not claimed"):
        release(replace(HELD, state=ItemState.OPEN, claimed_by=""), "alice")
    done = replace(HELD, resolution=settle(HELD, verdict(), NOW))
    with pytest.raises(ItemConflict, match="already resolved"):
        release(done, "alice")
