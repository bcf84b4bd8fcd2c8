"""Tasks and labeling configs for Label Studio (sidecar.core.labelstudio)."""

from __future__ import annotations

import math
from xml.etree import ElementTree

import pytest

from sidecar.core.labelstudio import (
    ConfigNames,
    LabelConfigError,
    config_names,
    labeling_config,
    task_for,
)
from tests.escalations import escalation

NAMES = ConfigNames("text", "label", "input")


def test_a_config_offers_each_label_as_written() -> None:
    """Every label is a choice, whatever characters it holds; the input is read from $kind."""
    labels = ["cat", 'say "hi" & <go>', "it's"]
    view = ElementTree.fromstring(labeling_config(labels, "image"))  # noqa: S314 (our own text)
    assert view.find("Image").attrib == {"name": "input", "value": "$image"}  # type: ignore[union-attr]
    assert [c.attrib["value"] for c in view.iter("Choice")] == labels


@pytest.mark.parametrize(
    ("labels", "kind", "field"),
    [([], "text", "labels"), (["a", "a"], "text", "labels"), (["a"], "video", "input")],
)
def test_a_config_needs_distinct_labels_and_a_known_input(
    labels: list[str], kind: str, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        labeling_config(labels, kind)


def test_the_names_come_from_the_one_choices_control() -> None:
    parsed = {
        "verdict": {
            "type": "Choices",
            "to_name": ["photo"],
            "inputs": [{"type": "Image", "value": "image"}],
        }
    }
    assert config_names(parsed) == ConfigNames("image", "verdict", "photo")


@pytest.mark.parametrize(
    "parsed",
    [{}, {"x": {"type": "Labels", "to_name": ["t"], "inputs": [{"value": "text"}]}}],
)
def test_a_config_without_one_choices_control_is_refused(parsed: dict[str, object]) -> None:
    with pytest.raises(LabelConfigError):
        config_names(parsed)


def test_a_task_holds_the_input_the_decision_and_a_scored_prediction() -> None:
    e = escalation("e1", tier="HUMAN_PRIMARY", reason="RULE", rule_id="big")
    task = task_for(e.to_dict(), NAMES)
    data = task["data"]
    assert data["text"] == e.input_ref
    assert (data["escalation_id"], data["tier"], data["priority"]) == ("e1", "HUMAN_PRIMARY", 0)
    assert (data["reason"], data["rule_id"]) == ("RULE", "big")
    assert data["hitl_escalation"]["request_id"] == e.request_id
    (prediction,) = task["predictions"]
    assert prediction["score"] == e.calibrated_confidence
    assert prediction["result"][0]["value"] == {"choices": ["b"]}


def test_a_fallback_has_no_prediction_and_a_finite_confidence() -> None:
    e = escalation("e2", predicted_class=-1, predicted_label="", calibrated_confidence=math.nan)
    task = task_for(e.to_dict(), NAMES)
    assert "predictions" not in task
    assert task["data"]["calibrated_confidence"] == 0.0
