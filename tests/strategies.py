"""Hypothesis strategies shared by the unit tests: policies, requests, signals."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from sidecar.core.decision import CalibrationFailure
from sidecar.core.experiments import Arm, Experiment
from sidecar.core.policy import CalibratorRef, ModelPolicy, Policy
from sidecar.core.request import RouteInput
from sidecar.core.rules import Condition, Rule
from sidecar.core.sampling import AuditSampler
from sidecar.core.signals import Signals
from sidecar.core.thresholds import Thresholds, ThresholdTable

MODEL = "m"
LABELS = ("a", "b", "c")
DOMAINS = ("", "eu", "us")

unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def thresholds(draw: st.DrawFn) -> Thresholds:
    a, b = draw(unit), draw(unit)
    return Thresholds(max(a, b), min(a, b), draw(st.sampled_from((False, False, True))))


@st.composite
def tables(draw: st.DrawFn) -> ThresholdTable:
    domains = draw(st.dictionaries(st.sampled_from(DOMAINS[1:]), thresholds(), max_size=2))
    return ThresholdTable(draw(thresholds()), domains)


conditions = st.one_of(
    st.builds(
        Condition,
        st.just("attributes.amount"),
        st.sampled_from(["lt", "le", "gt", "ge"]),
        st.floats(-1e6, 1e6),
    ),
    st.builds(
        Condition,
        st.just("attributes.topic"),
        st.sampled_from(["eq", "ne"]),
        st.sampled_from(["x", "y"]),
    ),
    st.builds(Condition, st.just("domain"), st.just("in"), st.just(("eu",))),
    st.builds(Condition, st.just("confidence"), st.just("lt"), unit),
    st.builds(Condition, st.just("margin"), st.sampled_from(["ge", "lt"]), unit),
    st.builds(Condition, st.just("entropy"), st.just("gt"), st.floats(0, 2)),
    st.builds(Condition, st.just("predicted_class"), st.just("in"), st.just((0.0, 2.0))),
    st.builds(Condition, st.just("predicted_label"), st.just("eq"), st.sampled_from(LABELS)),
    st.builds(Condition, st.just("model_version"), st.just("ne"), st.just("v1")),
)


@st.composite
def rules(draw: st.DrawFn) -> tuple[Rule, ...]:
    count = draw(st.integers(0, 3))
    return tuple(
        Rule(f"r{i}", tuple(draw(st.lists(conditions, min_size=1, max_size=2))))
        for i in range(count)
    )


@st.composite
def experiments(draw: st.DrawFn) -> Experiment | None:
    if not draw(st.booleans()):
        return None
    arms = (
        Arm("control", draw(st.floats(0.1, 10))),
        Arm("treatment", draw(st.floats(0.1, 10)), draw(st.one_of(st.none(), tables()))),
    )
    unit_key = draw(st.sampled_from(["request_id", "attributes.user"]))
    return Experiment(f"{MODEL}/exp", unit_key, arms)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    model = ModelPolicy(
        name=MODEL,
        calibrator=CalibratorRef("c.onnx", "0" * 64, "v1"),
        thresholds=draw(tables()),
        rules=draw(rules()),
        experiment=draw(experiments()),
        audit=AuditSampler(draw(unit), MODEL),
    ).with_labels(LABELS)
    stale = draw(st.booleans())
    return Policy(
        revision=draw(st.integers(1, 10_000)),
        models={MODEL: model},
        issued_at=0.0 if stale else None,
        max_age_seconds=60.0 if stale else None,
    )


@st.composite
def requests(draw: st.DrawFn) -> RouteInput:
    return RouteInput(
        request_id=draw(st.text(min_size=1, max_size=20)),
        model=MODEL,
        logits=np.array(
            draw(st.lists(st.floats(-20, 20, width=32), min_size=3, max_size=3)), dtype=np.float32
        ),
        domain=draw(st.sampled_from(DOMAINS)),
        model_version=draw(st.sampled_from(["", "v1"])),
        string_attributes=draw(
            st.dictionaries(st.sampled_from(["topic", "user"]), st.sampled_from(["x", "y", "u1"]))
        ),
        numeric_attributes=draw(st.dictionaries(st.just("amount"), st.floats(-1e6, 1e6))),
    )


@st.composite
def signals(draw: st.DrawFn) -> Signals:
    confidence = draw(st.floats(1 / 3, 1.0))
    return Signals(draw(st.integers(0, 2)), confidence, draw(unit), draw(st.floats(0, 2)))


failures = st.sampled_from(list(CalibrationFailure))
