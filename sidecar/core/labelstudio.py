"""What a Label Studio task of an escalation holds, and what a classification
project's labeling config must say, for the Label Studio sink and bridge
(``sidecar.escalation.sinks.labelstudio``, ``sidecar.labelstudio``). Pure: text and
dicts in, text and dicts out; no I/O, no SDK.

A task's ``data`` holds the input (under the key the project's config reads it
from, ``value="$text"`` -> ``text``), the fields a reviewer sorts and filters by in
Label Studio's data manager (escalation id, model, tier, reason, rule, the model's
label and calibrated confidence, priority) and, under ``hitl_escalation``, the
escalation record itself, from which the bridge builds the resolution. The SLA's
deadline and escalation level are added by the bridge, which keeps them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

# Lower is more urgent, as the review queue's priority (review.proto).
PRIORITY = {"HUMAN_PRIMARY": 0, "HUMAN_ASSISTED": 1, "AUTOMATED": 2}
RECORD_KEY = "hitl_escalation"
DEFAULT_FROM_NAME = "label"
DEFAULT_DATA_KEY = "text"
# The object tags a classification config may label, and the variable each reads.
INPUT_TAGS = {"text": "Text", "image": "Image", "hypertext": "HyperText", "audio": "Audio"}


class LabelConfigError(ValueError):
    """A project's labeling config that has no single-choice classification."""


@dataclass(frozen=True, slots=True)
class ConfigNames:
    """Where a classification config reads its input and writes its choice."""

    data_key: str  # the task data key the object tag reads ("text" for value="$text")
    from_name: str  # the Choices tag's name
    to_name: str  # the object tag's name


def labeling_config(labels: Sequence[str], input_kind: str = DEFAULT_DATA_KEY) -> str:
    """A single-choice classification config over labels, reading the input from
    ``$<input_kind>`` (text, image, hypertext or audio). ValueError for no labels,
    a repeated label or an unknown kind."""
    if not labels:
        raise ValueError("labels: a classification config needs at least one label")
    if len(set(labels)) != len(labels):
        raise ValueError("labels: each label must appear once")
    tag = INPUT_TAGS.get(input_kind)
    if tag is None:
        raise ValueError(f"input: must be one of {', '.join(INPUT_TAGS)}, got {input_kind!r}")
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f'  <{tag} name="input" value="${input_kind}"/>\n'
        f'  <Choices name="{DEFAULT_FROM_NAME}" toName="input" choice="single"'
        ' showInLine="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def config_names(parsed: Mapping[str, Any]) -> ConfigNames:
    """The names of a project's config, from Label Studio's ``parsed_label_config``
    (control name -> its type, to_name and inputs): its one Choices control.
    LabelConfigError when it has none, or several."""
    choices = [
        (name, control)
        for name, control in parsed.items()
        if isinstance(control, Mapping) and control.get("type") == "Choices"
    ]
    if len(choices) != 1:
        raise LabelConfigError(
            f"the labeling config must have exactly one <Choices> control, has {len(choices)}"
        )
    name, control = choices[0]
    inputs = control.get("inputs") or []
    to_names = control.get("to_name") or []
    if not inputs or not to_names or not inputs[0].get("value"):
        raise LabelConfigError(f"<Choices name={name!r}> labels no input with a $variable")
    return ConfigNames(str(inputs[0]["value"]), str(name), str(to_names[0]))


def task_for(record: Mapping[str, Any], names: ConfigNames) -> dict[str, Any]:
    """The task (``data`` and, unless the sidecar fell back without a prediction,
    ``predictions``) Label Studio imports for an escalation record."""
    tier = str(record["tier"])
    data = {
        names.data_key: record["input_ref"],
        "escalation_id": record["escalation_id"],
        "request_id": record["request_id"],
        "model": record["model"],
        "model_version": record["model_version"],
        "tier": tier,
        "priority": PRIORITY.get(tier, len(PRIORITY)),
        "reason": record["reason"],
        "rule_id": record["rule_id"],
        "predicted_label": record["predicted_label"],
        "calibrated_confidence": _finite(record["calibrated_confidence"]),
        RECORD_KEY: {**record, "calibrated_confidence": _finite(record["calibrated_confidence"])},
    }
    task: dict[str, Any] = {"data": data}
    if int(record["predicted_class"]) >= 0 and record["predicted_label"]:
        task["predictions"] = [
            {
                "model_version": str(record["model_version"] or record["model"]),
                "score": _finite(record["calibrated_confidence"]),
                "result": [choice_result(names, str(record["predicted_label"]))],
            }
        ]
    return task


def choice_result(names: ConfigNames, label: str) -> dict[str, Any]:
    """One region of a classification result choosing label."""
    return {
        "from_name": names.from_name,
        "to_name": names.to_name,
        "type": "choices",
        "value": {"choices": [label]},
    }


def chosen_labels(result: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every label a result's choices regions choose, in order."""
    return [
        str(choice)
        for region in result
        if region.get("type") == "choices"
        for choice in (region.get("value") or {}).get("choices") or []
    ]


def _finite(value: Any) -> float:
    """A confidence as JSON can hold it: a fallback's NaN (null in the spool) as 0."""
    number = float(value if value is not None else math.nan)
    return number if math.isfinite(number) else 0.0
