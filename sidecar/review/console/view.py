"""What the console's pages show of an item, and the evidence a verdict records of
what was shown. Pure: no I/O, no clock (``now`` is given).

Probabilities: the escalation's ``logits`` are what the caller sent the sidecar, so
they are the model's raw output, not the calibrated confidence: softmax of them when
``input_kind`` is LOGITS, as sent when PROBABILITIES. The page labels them so; the
calibrated confidence of the predicted class is shown beside them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import __version__
from sidecar.escalation.record import Escalation
from sidecar.review.bulk import Reverted
from sidecar.review.console.inputs import InputView
from sidecar.review.history import EventKind, ItemEvent
from sidecar.review.item import Resolution, ReviewItem
from sidecar.review.sla import Sla

CONSOLE_VERSION = f"hitl-review-console/{__version__}"
TOP_CLASSES = 5


@dataclass(frozen=True, slots=True)
class ClassShown:
    index: int
    label: str
    probability: float  # the model's raw probability (softmax of the logits, or as sent)


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    what: str


def probabilities(e: Escalation) -> list[float]:
    """The model's raw class probabilities: softmax of the logits, or as sent."""
    if e.input_kind == "PROBABILITIES":
        return [float(p) for p in e.logits]
    if not e.logits:
        return []
    top = max(e.logits)
    weights = [math.exp(x - top) for x in e.logits]
    total = sum(weights)
    return [w / total for w in weights]


def label_of(e: Escalation, index: int) -> str:
    """The class's label: from the escalation's labels, else the predicted label for
    the predicted class, else the index."""
    if 0 <= index < len(e.labels):
        return e.labels[index]
    if index == e.predicted_class and e.predicted_label:
        return e.predicted_label
    return str(index)


def top_classes(e: Escalation, count: int = TOP_CLASSES) -> list[ClassShown]:
    """The count most probable classes, most probable first (ties by index)."""
    ranked = sorted(enumerate(probabilities(e)), key=lambda pair: (-pair[1], pair[0]))
    return [ClassShown(i, label_of(e, i), p) for i, p in ranked[:count]]


def class_options(e: Escalation) -> list[tuple[int, str]]:
    """Every class an override may name, by index, with its label."""
    return [(i, label_of(e, i)) for i in range(len(e.logits))]


def time_left(seconds: float) -> str:
    """'14 min left', '2 h 05 min left', 'overdue by 3 min' (rounded down to minutes,
    seconds under one)."""
    late = seconds < 0
    left = abs(seconds)
    if left < 60:
        span = f"{int(left)} s"
    elif left < 3600:
        span = f"{int(left // 60)} min"
    elif left < 86400:
        span = f"{int(left // 3600)} h {int(left % 3600 // 60):02d} min"
    else:
        span = f"{int(left // 86400)} d {int(left % 86400 // 3600)} h"
    return f"overdue by {span}" if late else f"{span} left"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def history(
    item: ReviewItem,
    sla: Sla,
    events: Sequence[ItemEvent] = (),
    reverts: Sequence[Reverted] = (),
    blind_for: str = "",
) -> list[Event]:
    """The item's life, oldest first: decided, received, each claim, release (a skip)
    and escalation level raise (``events``, as the store keeps them), each answer, the
    resolution, and each resolution a lead reverted, with its revert.

    An item from before the store kept events shows its latest claim and raise as the
    row has them (a raise sets the next deadline its tier's SLA later, which dates it).
    ``blind_for``: a reviewer who may not see others' answers (``sees_answers``); on
    an item needing several reviews they see only their own claims and answer, so
    nobody learns who else answered before answering."""
    e = item.escalation
    shown = [
        Event(e.created_at, f"decided by the sidecar: {e.tier}, {e.reason}"),
        Event(item.received_at, "received by the queue"),
    ]
    kinds = {event.kind for event in events}
    if item.escalation_level and EventKind.RAISED not in kinds:
        raised_at = item.due_at - sla.seconds.get(e.tier, 0.0)
        shown.append(Event(raised_at, _raised(item.escalation_level)))
    if item.claimed_by and EventKind.CLAIMED not in kinds:
        shown.append(Event(item.claimed_at, f"claimed by {item.claimed_by}"))
    private = bool(blind_for) and item.reviews_required > 1
    for event in events:
        if private and event.actor not in ("", blind_for):
            continue
        shown.append(Event(event.at, _happened(event)))
    for a in item.answers:
        if not private or a.reviewer == blind_for:
            shown.append(Event(a.resolved_at, f"answered by {_decided(a)}"))
    for reverted in reverts:
        taken_back = reverted.resolution
        shown.append(Event(taken_back.resolved_at, f"resolved by {_decided(taken_back)}"))
        why = f"reverted by {reverted.reverted_by}: {reverted.reason}"
        shown.append(Event(reverted.reverted_at, why))
    if (r := item.resolution) is not None:
        shown.append(Event(r.resolved_at, f"resolved by {_decided(r)}"))
    return sorted(shown, key=lambda event: event.at)


def _happened(event: ItemEvent) -> str:
    if event.kind is EventKind.CLAIMED:
        return f"claimed by {event.actor}"
    if event.kind is EventKind.RELEASED:
        return f"released by {event.actor}, undecided"
    return _raised(int(event.detail))


def _raised(level: int) -> str:
    passed = f"{level} deadline{'s' if level > 1 else ''}"
    return f"raised to escalation level {level} ({passed} passed)"


def _decided(r: Resolution) -> str:
    """'alice (recorded by lee): OVERRIDE, class 2 refund [2 of 2]'; 'lee: ACCEPT,
    class 1 fraud, in bulk accept bulk-1a2b3c4d5e6f' for an item a bulk accept took."""
    by = r.reviewer + (f" (recorded by {r.acted_by})" if r.acted_by else "")
    label = f"{r.label_class} {r.label}".strip()
    agreement = f" [{r.agreement}]" if r.agreement else ""
    batch = batch_of(r).get("batch_id", "")
    bulk = f", in bulk accept {batch}" if batch else ""
    return f"{by}: {r.verdict.value}, class {label}{agreement}{bulk}"


def choices(items: Sequence[ReviewItem]) -> tuple[list[str], list[str]]:
    """The models and the rule ids of items, each sorted, for a bulk accept's form."""
    models = sorted({item.escalation.model for item in items})
    rules = sorted({item.escalation.rule_id for item in items if item.escalation.rule_id})
    return models, rules


def batch_of(r: Resolution) -> dict[str, Any]:
    """The bulk accept a resolution was part of, as its evidence records it (batch_id,
    model, rule_id, tier, min_confidence); {} for a reviewer's own resolution."""
    try:
        shown = json.loads(r.evidence) if r.evidence else {}
    except ValueError:
        return {}
    batch = shown.get("bulk_accept") if isinstance(shown, dict) else None
    return batch if isinstance(batch, dict) else {}


def evidence(item: ReviewItem, shown: InputView, now: float) -> dict[str, Any]:
    """What the item page showed the reviewer, to be recorded with their verdict."""
    e = item.escalation
    return {
        "escalation_id": e.escalation_id,
        "shown_at": round(now, 3),
        "console": CONSOLE_VERSION,
        "input_ref": e.input_ref,
        "input_rendered": shown.kind,  # image, text, or reference (not rendered)
        "predicted_class": e.predicted_class,
        "predicted_label": e.predicted_label,
        "calibrated_confidence": _finite(e.calibrated_confidence),
        "top_classes": [
            asdict(c) | {"probability": round(c.probability, 6)} for c in top_classes(e)
        ],
        "probabilities_from": "probabilities as sent"
        if e.input_kind == "PROBABILITIES"
        else "softmax of the logits",
        "reason": e.reason,
        "rule_id": e.rule_id,
        "tier": e.tier,
        "escalation_level": item.escalation_level,
        "sla_seconds_left": round(item.due_at - now, 1),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
