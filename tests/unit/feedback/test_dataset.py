"""Datasets from the feedback log: the label rule, weights by inclusion probability
and stratum, the strategies, and identity by content."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.feedback.dataset import Labelled, Query, compile_dataset


def decision(request_id: str, tier: str = "TIER_AUTOMATED", **fields: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model": "m",
        "model_version": "v1",
        "tier": tier,
        "predicted_class": 1,
        "logits": [0.5, 2.0, -1.0],
        "input_kind": "INPUT_KIND_LOGITS",
        "policy_revision": "4",  # protobuf's JSON mapping writes int64 as a string
        "calibration_version": "t-v1",
        "decided_at": 100.0,
        "inclusion_probability": 0.05 if tier == "TIER_AUTOMATED" else 1.0,
        **fields,
    }


def label(kind: str, class_index: int | None = None, name: str = "") -> dict[str, Any]:
    value: dict[str, Any] = {"name": name} if name else {}
    if class_index is not None:
        value["class_index"] = class_index
    return {"type": f"FEEDBACK_{kind}", "label": value}


QUERY = Query("m", 0.0, 1000.0)
LABELS = ["dog", "cat", "bird"]


def rows(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def test_an_outcome_beats_a_review_beats_a_correction_and_disagreements_are_listed() -> None:
    built = compile_dataset(
        QUERY,
        [
            Labelled(decision("a"), [label("EXPLICIT_CORRECTION", 0), label("REVIEW", 2)]),
            Labelled(decision("b"), [label("REVIEW", 1), label("OUTCOME", 1)]),
            Labelled(decision("c"), [label("OUTCOME", 0), label("OUTCOME", 2)]),  # latest wins
            Labelled(decision("d"), [label("RATING")]),
            Labelled(decision("e"), [label("OUTCOME", name="cat")]),
            Labelled(decision("f"), [label("OUTCOME", 3)]),  # of 3 classes: 0 to 2
            Labelled(decision("g", labels=LABELS), [label("OUTCOME", name="cat")]),
            Labelled(decision("h", labels=LABELS), [label("OUTCOME", 0, name="cat")]),
        ],
    )
    got = {row["request_id"]: (row["label"], row["label_source"]) for row in rows(built.data)}
    assert got == {
        "a": (2, "review"),
        "b": (1, "outcome"),
        "c": (2, "outcome"),
        "g": (1, "outcome"),
    }
    manifest = built.manifest
    assert manifest["disagreements"] == 1
    assert manifest["disagreements_listed"] == [
        {"request_id": "a", "labels": {"review": 2, "correction": 0}}
    ]
    assert manifest["unusable"] == {
        "label outside the decision's classes": 1,
        "label naming no class the decision's labels know": 1,
        "label whose name is not its class's": 1,
        "no label from the chosen sources": 1,
    }
    assert manifest["label_rule"].startswith("outcome > review > correction")
    assert manifest["policy_revisions"] == [4]


def test_rows_carry_their_inverse_inclusion_probability() -> None:
    built = compile_dataset(
        QUERY,
        [
            Labelled(decision("auto"), [label("OUTCOME", 1)]),
            Labelled(decision("esc", "TIER_HUMAN_PRIMARY"), [label("REVIEW", 0)]),
        ],
    )
    weights = {row["request_id"]: row["weight"] for row in rows(built.data)}
    assert weights == {"auto": pytest.approx(20.0), "esc": 1.0}
    assert built.manifest["per_tier"] == {"AUTOMATED": 1, "HUMAN_PRIMARY": 1}
    assert built.manifest["weights"]["sum"] == pytest.approx(21.0)


def test_the_same_log_gives_the_same_bytes_and_id_whatever_the_order() -> None:
    items = [Labelled(decision(f"r{i}"), [label("OUTCOME", i % 3)]) for i in range(20)]
    first = compile_dataset(QUERY, items)
    again = compile_dataset(QUERY, list(reversed(items)))
    assert first.data == again.data
    assert first.id == again.id == first.manifest["id"]
    assert first.id.startswith("ds-")
    assert rows(first.data)[0]["logits"] == [0.5, 2.0, -1.0]
    other = compile_dataset(QUERY, items[:-1])
    assert other.id != first.id


def test_class_balanced_keeps_the_rarest_class_count_of_each_and_reweights() -> None:
    items = [Labelled(decision(f"r{i}"), [label("OUTCOME", 0 if i < 12 else 1)]) for i in range(15)]
    built = compile_dataset(Query("m", 0.0, 1000.0, "class-balanced"), items)
    kept = rows(built.data)
    assert built.manifest["per_class"] == {"0": 3, "1": 3}
    class_0 = [row for row in kept if row["label"] == 0]
    assert [row["weight"] for row in class_0] == [pytest.approx(20.0 * 12 / 3)] * 3
    again = compile_dataset(Query("m", 0.0, 1000.0, "class-balanced"), items)
    assert again.data == built.data  # the same rows kept: a stable draw


def test_stratified_keeps_the_rarest_tier_count_of_each() -> None:
    items = [Labelled(decision(f"a{i}"), [label("OUTCOME", 1)]) for i in range(10)]
    items += [
        Labelled(decision(f"h{i}", "TIER_HUMAN_ASSISTED"), [label("REVIEW", 1)]) for i in range(4)
    ]
    built = compile_dataset(Query("m", 0.0, 1000.0, "stratified"), items)
    assert built.manifest["per_tier"] == {"AUTOMATED": 4, "HUMAN_ASSISTED": 4}


def test_probabilities_stay_probabilities() -> None:
    item = Labelled(
        decision("p", input_kind="INPUT_KIND_PROBABILITIES", logits=[0.2, 0.8]),
        [label("OUTCOME", 1)],
    )
    (row,) = rows(compile_dataset(QUERY, [item]).data)
    assert row["probabilities"] == [0.2, 0.8]
    assert "logits" not in row
