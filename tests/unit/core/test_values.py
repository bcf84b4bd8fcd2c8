"""The per-prediction value types: immutable to the type checker, cheap to build."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from mypy import api

from sidecar.core.decision import Decision, Reason
from sidecar.core.request import RouteInput
from sidecar.core.thresholds import Tier
from sidecar.core.values import value


def test_a_value_compares_by_its_fields() -> None:
    """Two values with the same fields are equal and hash alike; eq=False keeps identity."""

    @value
    class Pair:
        left: int
        right: str = ""

    assert Pair(1, "a") == Pair(1, "a")
    assert hash(Pair(1, "a")) == hash(Pair(1, "a"))  # as a frozen dataclass's
    assert Pair(1) != Pair(2)
    assert not hasattr(Pair(1), "__dict__")  # slotted
    request = RouteInput("r", "m", np.zeros(2, dtype=np.float32))
    assert request != RouteInput("r", "m", np.zeros(2, dtype=np.float32))


def test_the_type_checker_refuses_to_change_a_value(tmp_path: Path) -> None:
    """mypy (strict, as make lint runs it) reports assigning to a field of one."""
    snippet = tmp_path / "mutate.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from sidecar.core.decision import Decision, Reason
            from sidecar.core.thresholds import Tier

            decision = Decision(Tier.AUTOMATED, Reason.THRESHOLD)
            decision.calibrated_confidence = 0.99
            """
        )
    )
    out, _err, status = api.run(["--strict", "--no-incremental", str(snippet)])
    assert status == 1
    assert 'Property "calibrated_confidence" defined in "Decision" is read-only' in out
    assert Decision(Tier.AUTOMATED, Reason.THRESHOLD).calibrated_confidence == 0.0
