"""Calibrated signals: the per-row arithmetic against a numpy reference."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sidecar.core.signals import signals_of

rows = arrays(
    np.float32, st.tuples(st.integers(1, 5), st.integers(2, 12)), elements=st.floats(0, 1, width=32)
)


@given(rows)
def test_signals_match_numpy(probs: np.ndarray[Any, Any]) -> None:
    """Class, confidence, margin and entropy equal numpy's argmax, sort and sum."""
    found = signals_of(probs)
    assert len(found) == len(probs)
    for i, s in enumerate(found):
        row = probs[i].astype(np.float64)
        assert s is not None
        ordered = np.sort(row)
        assert s.predicted_class == int(np.argmax(row))
        assert s.confidence == ordered[-1]
        assert np.isclose(s.margin, ordered[-1] - ordered[-2])
        positive = row[row > 0]
        assert np.isclose(s.entropy, -(positive * np.log(positive)).sum())


def test_non_finite_rows_have_no_signals() -> None:
    """A row with NaN or infinity gives None; the others are unaffected."""
    probs = np.array([[0.2, 0.8], [np.nan, 1.0], [np.inf, 0.0]], dtype=np.float32)
    out = signals_of(probs)
    assert out[0] is not None
    assert out[1:] == [None, None]
