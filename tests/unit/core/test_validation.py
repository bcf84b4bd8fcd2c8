"""Request validation: each bound, named by its proto field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sidecar.core.request import InputKind, RouteInput
from sidecar.core.validation import MAX_BATCH, _all_finite, check_batch_size, validate
from sidecar.errors import InvalidRequest

COUNTS = {"m": 3}


def request(**changes: Any) -> RouteInput:
    fields: dict[str, Any] = {
        "request_id": "r1",
        "model": "m",
        "logits": np.array([1.0, 2.0, 3.0], dtype=np.float32),
    }
    fields.update(changes)
    return RouteInput(**fields)


def test_valid_request_passes() -> None:
    """A well-formed request raises nothing."""
    validate(request(string_attributes={"a": "b"}, numeric_attributes={"n": 1.0}), COUNTS)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": "x" * 129}, "request_id"),
        ({"model": ""}, "model"),
        ({"model": "other"}, "model"),
        ({"logits": np.zeros(0, dtype=np.float32)}, "logits"),
        ({"logits": np.zeros(4, dtype=np.float32)}, "logits"),
        ({"logits": np.array([1, np.nan, 2], dtype=np.float32)}, "logits"),
        ({"logits": np.array([1, np.inf, 2], dtype=np.float32)}, "logits"),
        ({"input_kind": 9}, "input_kind"),
        ({"input_kind": InputKind.PROBABILITIES}, "logits"),
        ({"domain": "d" * 129}, "domain"),
        ({"string_attributes": {f"k{i}": "v" for i in range(65)}}, "string_attributes"),
        ({"string_attributes": {"k": "v" * 1025}}, "string_attributes['k']"),
        ({"string_attributes": {"k" * 65: "v"}}, "string_attributes"),
        ({"numeric_attributes": {"n": float("nan")}}, "numeric_attributes['n']"),
        ({"input_ref": "u" * 2049}, "input_ref"),
        ({"context": {"k": "v" * 20_000}}, "context"),
        ({"context": {f"k{i}": "" for i in range(65)}}, "context"),
    ],
)
def test_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    """Each bad input raises InvalidRequest whose field is the proto field."""
    with pytest.raises(InvalidRequest) as raised:
        validate(request(**changes), COUNTS)
    assert raised.value.field == field


def test_probabilities_must_sum_to_one() -> None:
    """Probabilities are accepted when they are a distribution."""
    validate(
        request(
            input_kind=InputKind.PROBABILITIES, logits=np.array([0.2, 0.3, 0.5], dtype=np.float32)
        ),
        COUNTS,
    )


def test_without_policy_model_and_class_count_are_unchecked() -> None:
    """No policy: an unknown model and any class count pass (the fallback answers)."""
    validate(request(model="anything", logits=np.ones(7, dtype=np.float32)), None)


def test_batch_size_bounds() -> None:
    """Batches hold 1..MAX_BATCH requests."""
    check_batch_size(1)
    check_batch_size(MAX_BATCH)
    for size in (0, MAX_BATCH + 1):
        with pytest.raises(InvalidRequest, match="requests"):
            check_batch_size(size)


def test_batch_item_errors_carry_the_index() -> None:
    """InvalidRequest.at places the field under the batch item."""
    error = InvalidRequest("logits", "is empty").at("requests[3]")
    assert error.field == "requests[3].logits"
    assert str(error) == "requests[3].logits: is empty"


@given(
    arrays(
        np.float32,
        st.integers(1, 300),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
def test_the_finiteness_check_agrees_with_numpy(logits: np.ndarray[Any, Any]) -> None:
    """Summed in Python or checked by numpy, NaN and infinity are found, and the
    largest finite float32 values are not taken for them."""
    assert _all_finite(logits) == bool(np.isfinite(logits).all())


def test_the_largest_float32_values_are_finite() -> None:
    """256 values of float32's maximum sum to a finite double."""
    assert _all_finite(np.full(256, np.finfo(np.float32).max, dtype=np.float32))
