"""What an annotation made in Label Studio says about its escalation: a resolution,
or the reason it is refused. Pure: the annotation's fields and the escalation in,
a verdict out.

The reviewer is the principal HITL_LABELSTUDIO_REVIEWERS maps the annotating user's
e-mail to (never a field of the annotation). The chosen label must be one of the
model's labels (the escalation's, as the forwarder sent them), which gives its
class; the verdict is ACCEPT when it is the model's label, else OVERRIDE. The time to
label is Label Studio's lead time (seconds the annotator spent on the task)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sidecar.core.labelstudio import chosen_labels
from sidecar.escalation.record import Escalation
from sidecar.review.item import Resolution, Verdict


class Refusal(StrEnum):
    """Why an annotation gives no resolution (the ``reason`` of the refusal counter)."""

    UNKNOWN_TASK = "unknown_task"  # not a task the sink made for an escalation
    UNMAPPED_REVIEWER = "unmapped_reviewer"  # its user maps to no reviewer
    LABEL_OUTSIDE_LIST = "label_outside_list"  # not one of the model's labels
    NO_LABEL = "no_label"  # no single choice (skipped, cancelled or empty)
    NO_LABEL_LIST = "no_label_list"  # the escalation came without its model's labels


@dataclass(frozen=True, slots=True)
class Annotation:
    """The fields of a Label Studio annotation the bridge reads."""

    annotation_id: int
    task_id: int
    user_email: str  # of completed_by, as Label Studio's users list gives it
    result: Sequence[Mapping[str, Any]]
    lead_time: float
    created_at: float
    was_cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    detail: str


def judge(
    annotation: Annotation, escalation: Escalation, reviewers: Mapping[str, str]
) -> Resolution | Refused:
    """The resolution annotation gives escalation, or why it gives none."""
    reviewer = reviewers.get(annotation.user_email.lower())
    if reviewer is None:
        return Refused(
            Refusal.UNMAPPED_REVIEWER,
            f"Label Studio user {annotation.user_email!r} is not in HITL_LABELSTUDIO_REVIEWERS",
        )
    chosen = chosen_labels(annotation.result)
    if annotation.was_cancelled or len(chosen) != 1:
        return Refused(Refusal.NO_LABEL, f"the annotation chooses {len(chosen)} labels, not one")
    label = chosen[0]
    labels = list(escalation.labels)
    if not labels:
        return Refused(Refusal.NO_LABEL_LIST, "the escalation carries no class labels")
    if label not in labels:
        return Refused(
            Refusal.LABEL_OUTSIDE_LIST, f"{label!r} is not one of the model's labels {labels}"
        )
    accepted = label == escalation.predicted_label and escalation.predicted_class >= 0
    lead_time = annotation.lead_time if math.isfinite(annotation.lead_time) else 0.0
    return Resolution(
        reviewer=reviewer,
        verdict=Verdict.ACCEPT if accepted else Verdict.OVERRIDE,
        label_class=labels.index(label),
        label=label,
        rationale="",
        time_to_label_seconds=max(0.0, lead_time),
        resolved_at=annotation.created_at,
    )
