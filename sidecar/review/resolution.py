"""What a reviewer's verdict records, and when they may give it. Pure.

ACCEPT labels the item with the model's predicted class and label (a fallback
decision has none, predicted_class -1: only OVERRIDE can label it). OVERRIDE carries
the true class, one of the item's classes (its logits say how many), and may name
its label too; when the escalation carries its model's labels, the label is the
class's (filled in when not given, refused when another). A label alone is refused:
a label without its class could not be fitted on.

An item needing several reviews (``consensus``) takes one answer per reviewer: a
reviewer who has answered may not answer again. The last answer settles it by
agreement, or leaves it to adjudication, where only a lead (``lead``, their own
verdict, not one recorded for another) may resolve it, and that is final.

``release`` says whether a reviewer may give an item back unresolved: the same
holder rules as a verdict's."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.errors import InvalidRequest
from sidecar.review.consensus import adjudicated, agreed
from sidecar.review.errors import ItemConflict
from sidecar.review.item import ItemState, Resolution, ReviewItem, Verdict


@dataclass(frozen=True, slots=True)
class ReviewerVerdict:
    """A reviewer's answer on one item, as asked (checked by ``validation``)."""

    escalation_id: str
    reviewer: str
    verdict: Verdict | None
    corrected_class: int | None = None
    corrected_label: str = ""
    rationale: str = ""
    # Measured by the reviewer's tool; 0 means claim-to-resolve time.
    time_to_label_seconds: float = 0.0
    acted_by: str = ""  # a lead recording the verdict for the reviewer
    evidence: str = ""  # what the reviewer was shown: a JSON object as text, or empty
    # The caller is a lead giving its own verdict (set from its credential, never
    # from a request field): only such a verdict resolves an item in adjudication.
    lead: bool = False


@dataclass(frozen=True, slots=True)
class Settled:
    """What a verdict does to an item: ``answer`` is recorded as one of its answers
    (None: an item needing one review, or an adjudication); ``final`` resolves it
    (None: reopened for the next answer, or for adjudication)."""

    answer: Resolution | None
    final: Resolution | None


def decide(item: ReviewItem, answer: ReviewerVerdict, now: float) -> Settled:
    """What answer does to item, or ItemConflict when the reviewer may not answer:
    see ``settle``, and it is already answered by them, or awaits a lead's
    adjudication."""
    given = settle(item, answer, now)
    if item.reviews_required <= 1:
        return Settled(None, given)
    if item.answered >= item.reviews_required:
        if not answer.lead:
            raise ItemConflict(
                f"escalation_id {item.escalation_id!r} awaits adjudication: only a lead"
                " may resolve it"
            )
        return Settled(None, adjudicated(given, item.answers))
    if any(a.reviewer == answer.reviewer for a in item.answers):
        raise ItemConflict(
            f"{answer.reviewer!r} has already answered escalation_id {item.escalation_id!r}:"
            " its answers must come from different reviewers"
        )
    answers = (*item.answers, given)
    if len(answers) < item.reviews_required:
        return Settled(given, None)
    return Settled(given, agreed(answers, item.consensus, now))


def settle(item: ReviewItem, answer: ReviewerVerdict, now: float) -> Resolution:
    """The resolution answer gives item on its own, or ItemConflict when the reviewer
    may not resolve it: it is resolved, never claimed, or last claimed by someone
    else. A lease that has expired does not stop its holder while nobody else has
    claimed it."""
    _check_holder(item, answer.reviewer)
    if not item.claimed_by:
        raise ItemConflict(f"escalation_id {item.escalation_id!r} is not claimed; claim it first")
    label_class, label = _label(item, answer)
    measured = answer.time_to_label_seconds
    return Resolution(
        reviewer=answer.reviewer,
        verdict=answer.verdict or Verdict.ACCEPT,
        label_class=label_class,
        label=label,
        rationale=answer.rationale,
        time_to_label_seconds=measured if measured > 0 else max(0.0, now - item.claimed_at),
        resolved_at=now,
        acted_by=answer.acted_by,
        evidence=answer.evidence,
    )


def release(item: ReviewItem, reviewer: str) -> None:
    """ItemConflict unless reviewer holds item, and so may give it back: it is not
    resolved and its last claim is theirs (a lease that ran out still counts while
    nobody else has claimed it, as for a verdict)."""
    _check_holder(item, reviewer)
    if not item.claimed_by:
        raise ItemConflict(f"escalation_id {item.escalation_id!r} is not claimed")


def _check_holder(item: ReviewItem, reviewer: str) -> None:
    """ItemConflict when item is resolved, or last claimed by someone else."""
    if item.resolution is not None:
        raise ItemConflict(
            f"escalation_id {item.escalation_id!r} is already resolved "
            f"by {item.resolution.reviewer!r}"
        )
    if item.claimed_by and item.claimed_by != reviewer:
        held = "is claimed by" if item.state is ItemState.CLAIMED else "was last claimed by"
        raise ItemConflict(
            f"escalation_id {item.escalation_id!r} {held} {item.claimed_by!r}, not {reviewer!r}"
        )


def _label(item: ReviewItem, answer: ReviewerVerdict) -> tuple[int, str]:
    predicted = item.escalation.predicted_class, item.escalation.predicted_label
    if answer.verdict is not Verdict.OVERRIDE:
        if predicted[0] < 0:
            raise InvalidRequest(
                "verdict", "the sidecar fell back without a prediction; OVERRIDE with the class"
            )
        return predicted
    if answer.corrected_class == predicted[0]:
        raise InvalidRequest(
            "corrected_class", f"{predicted[0]} is the predicted class; use ACCEPT"
        )
    if answer.corrected_class is None and answer.corrected_label == predicted[1]:
        raise InvalidRequest(
            "corrected_label", f"{predicted[1]!r} is the predicted label; use ACCEPT"
        )
    classes = len(item.escalation.logits)
    if answer.corrected_class is None:
        raise InvalidRequest(
            "corrected_class",
            f"an override needs the true class (0 to {classes - 1}), not only a label",
        )
    if answer.corrected_class >= classes:
        raise InvalidRequest(
            "corrected_class",
            f"{answer.corrected_class} is not a class of this item (0 to {classes - 1})",
        )
    return answer.corrected_class, _named(item, answer.corrected_class, answer.corrected_label)


def _named(item: ReviewItem, label_class: int, label: str) -> str:
    """The label of an override: the escalation's label of the class when it carries
    labels (a label given must be that one), else the label as given."""
    labels = item.escalation.labels
    if not labels:
        return label
    named = labels[label_class]
    if label and label != named:
        raise InvalidRequest("corrected_label", f"{label!r} is not class {label_class}'s {named!r}")
    return named
