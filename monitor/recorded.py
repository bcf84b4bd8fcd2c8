"""The feedback log as the monitor reads it: each recorded decision of a model in a
window as an ``Observation``, its label chosen by the datasets' rule
(``sidecar.feedback.dataset.label_class``: an outcome beats a review beats a
correction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monitor.observations import Observation
from sidecar.feedback.dataset import DEFAULT_SOURCES, Labelled, label_class
from sidecar.feedback.store import FeedbackStore


def observations(
    store: FeedbackStore,
    model: str,
    since: float,
    until: float,
    group: str = "",
    sources: Sequence[str] = DEFAULT_SOURCES,
) -> list[Observation]:
    """model's decisions decided in [since, until), labelled or not; ``group`` names
    the string attribute whose value is each one's group ("" for none)."""
    return [observation(item, group, sources) for item in store.recorded(model, since, until)]


def observation(
    item: Labelled, group: str = "", sources: Sequence[str] = DEFAULT_SOURCES
) -> Observation:
    d: Mapping[str, Any] = item.decision
    numbers = {name: repr(float(v)) for name, v in d.get("numeric_attributes", {}).items()}
    attributes = {**numbers, **d.get("string_attributes", {})}
    return Observation(
        request_id=d["request_id"],
        model=d["model"],
        confidence=float(d.get("calibrated_confidence", 0.0)),
        predicted_class=int(d.get("predicted_class", 0)),
        tier=str(d.get("tier", "")).removeprefix("TIER_"),
        reason=str(d.get("reason", "")).removeprefix("REASON_"),
        inclusion_probability=float(d.get("inclusion_probability", 1.0)),
        decided_at=float(d.get("decided_at", 0.0)),
        label=label_class(item, sources),
        domain=d.get("domain", ""),
        arm=d.get("experiment_arm", ""),
        policy_revision=int(d.get("policy_revision", 0)),
        group=attributes.get(group, "") if group else "",
        attributes=attributes,
    )
