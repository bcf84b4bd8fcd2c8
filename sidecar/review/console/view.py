"""What the console's pages show of an item, and the evidence a verdict records of
what was shown. Pure: no I/O, no clock (``now`` is given).

Probabilities: the escalation's ``logits`` are what the caller sent the sidecar, so
they are the model's raw output, not the calibrated confidence: softmax of them when
``input_kind`` is LOGITS, as sent when PROBABILITIES. The page labels them so; the
calibrated confidence of the predicted class is shown beside them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar import __version__
from sidecar.escalation.record import Escalation
from sidecar.review.console.inputs import InputView
from sidecar.review.item import ReviewItem
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


def history(item: ReviewItem, sla: Sla) -> list[Event]:
    """What the queue knows of the item's life, oldest first: decided, received, its
    latest escalation level raise (each one a deadline passed; a raise sets the next
    deadline its tier's SLA later, which dates it), its last claim and its
    resolution. (The queue keeps the latest claim and raise only, not each one.)"""
    e = item.escalation
    events = [
        Event(e.created_at, f"decided by the sidecar: {e.tier}, {e.reason}"),
        Event(item.received_at, "received by the queue"),
    ]
    if item.escalation_level:
        raised_at = item.due_at - sla.seconds.get(e.tier, 0.0)
        passed = f"{item.escalation_level} deadline{'s' if item.escalation_level > 1 else ''}"
        raised = f"raised to escalation level {item.escalation_level} ({passed} passed)"
        events.append(Event(raised_at, raised))
    if item.claimed_by:
        events.append(Event(item.claimed_at, f"claimed by {item.claimed_by}"))
    if (r := item.resolution) is not None:
        by = r.reviewer + (f" (recorded by {r.acted_by})" if r.acted_by else "")
        label = f"{r.label_class} {r.label}".strip()
        events.append(Event(r.resolved_at, f"resolved by {by}: {r.verdict.value}, class {label}"))
    return sorted(events, key=lambda event: event.at)


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
