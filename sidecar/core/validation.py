"""Request validation: every bound a caller can break, named by its proto field.

Pure: the caller passes the class count each known model's calibrator has (None
when no policy is loaded, in which case model and class count cannot be checked and
the request is answered by the no-policy fallback)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from sidecar.core.request import FloatArray, InputKind, RouteInput
from sidecar.errors import InvalidRequest

MAX_REQUEST_ID = 128
MAX_NAME = 128
MAX_LOGITS = 65_536
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_NAME = 64
MAX_STRING_VALUE = 1024
MAX_INPUT_REF = 2048
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_BYTES = 16 * 1024
MAX_BATCH = 4096
PROBABILITY_SUM_TOLERANCE = 1e-3
_INPUT_KINDS = frozenset(int(kind) for kind in InputKind)
_SUMMED = 256  # logits up to this many are checked for finiteness in plain Python


def validate(
    request: RouteInput, class_counts: Mapping[str, int] | None, finite: bool | None = None
) -> None:
    """Raise InvalidRequest naming the first field that is out of bounds. finite:
    whether every logit is finite, when the caller has checked a batch's at once."""
    check_text(request.request_id, "request_id", MAX_REQUEST_ID, required=True)
    check_text(request.model, "model", MAX_NAME, required=True)
    check_text(request.model_version, "model_version", MAX_NAME)
    check_text(request.domain, "domain", MAX_NAME)
    expected = None
    if class_counts is not None:
        expected = class_counts.get(request.model)
        if expected is None:
            known = ", ".join(sorted(class_counts)) or "none"
            raise InvalidRequest("model", f"unknown model {request.model!r} (known: {known})")
    if request.input_kind not in _INPUT_KINDS:
        raise InvalidRequest("input_kind", f"unknown value {request.input_kind}")
    _check_logits(request, expected, finite)
    check_attributes(request.string_attributes or {}, request.numeric_attributes or {})
    check_text(request.input_ref, "input_ref", MAX_INPUT_REF)
    check_context(request.context or {})


def check_outcome(
    request_id: str,
    model: str,
    true_class: int | None,
    true_label: str,
    source: str,
    classes: int | None,
) -> None:
    """A RecordOutcome's bounds; classes is the model's class count when it is known."""
    check_text(request_id, "request_id", MAX_REQUEST_ID, required=True)
    check_text(model, "model", MAX_NAME, required=True)
    check_text(true_label, "true_label", MAX_STRING_VALUE)
    check_text(source, "source", MAX_NAME)
    if true_class is None and not true_label:
        raise InvalidRequest("true_class", "true_class or true_label is required")
    if true_class is not None and true_class < 0:
        raise InvalidRequest("true_class", "must be >= 0")
    if true_class is not None and classes is not None and true_class >= classes:
        raise InvalidRequest(
            "true_class", f"{true_class} is not a class of model {model!r} (0 to {classes - 1})"
        )


def check_batch_size(size: int) -> None:
    if size == 0:
        raise InvalidRequest("requests", "must hold at least one request")
    if size > MAX_BATCH:
        raise InvalidRequest("requests", f"{size} requests; at most {MAX_BATCH} per batch")


def check_text(value: str, field: str, limit: int, *, required: bool = False) -> None:
    if required and not value:
        raise InvalidRequest(field, "is required")
    if len(value) > limit:
        raise InvalidRequest(field, f"{len(value)} characters; at most {limit}")


def check_labels(labels: Sequence[str], classes: int) -> None:
    """A decision's class labels: none, or one per class, each named once (the review
    queue and the feedback service keep the same bounds, so an escalation one takes
    the other takes too)."""
    if not labels:
        return
    if len(labels) != classes:
        raise InvalidRequest("labels", f"{len(labels)} labels for {classes} logits")
    for label in labels:
        check_text(label, "labels", MAX_STRING_VALUE, required=True)
    if len(set(labels)) != len(labels):
        raise InvalidRequest("labels", "names a label twice")


def _check_logits(request: RouteInput, expected: int | None, finite: bool | None) -> None:
    logits = request.logits
    size = logits.shape[0]
    if size == 0:
        raise InvalidRequest("logits", "is empty")
    if expected is not None and size != expected:
        raise InvalidRequest(
            "logits", f"{size} values; model {request.model!r} has {expected} classes"
        )
    if size > MAX_LOGITS:
        raise InvalidRequest("logits", f"{size} values; at most {MAX_LOGITS}")
    if not (_all_finite(logits) if finite is None else finite):
        raise InvalidRequest("logits", "holds NaN or infinity")
    if request.input_kind == InputKind.PROBABILITIES:
        if logits.min() < 0.0 or logits.max() > 1.0:
            raise InvalidRequest("logits", "probabilities must lie in [0, 1]")
        total = float(logits.sum(dtype=np.float64))
        if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
            raise InvalidRequest("logits", f"probabilities sum to {total:.6f}, not 1")


def _all_finite(logits: FloatArray) -> bool:
    """Whether no value is NaN or infinite. A few values are summed as Python floats
    (float32 values cannot overflow a double sum; NaN and infinity survive it), which
    costs a third of numpy's two calls; many go to numpy."""
    if logits.shape[0] <= _SUMMED:
        return math.isfinite(sum(logits.tolist()))
    return bool(np.isfinite(logits).all())


def check_attributes(strings: Mapping[str, str], numbers: Mapping[str, float]) -> None:
    if len(strings) + len(numbers) > MAX_ATTRIBUTES:
        raise InvalidRequest(
            "string_attributes",
            f"{len(strings) + len(numbers)} attributes in all; at most {MAX_ATTRIBUTES}",
        )
    for field, names in (("string_attributes", strings), ("numeric_attributes", numbers)):
        for name in names:
            if not name or len(name) > MAX_ATTRIBUTE_NAME:
                raise InvalidRequest(
                    field, f"attribute names must be 1-{MAX_ATTRIBUTE_NAME} characters"
                )
    for name, text in strings.items():
        if len(text) > MAX_STRING_VALUE:
            raise InvalidRequest(
                f"string_attributes[{name!r}]",
                f"{len(text)} characters; at most {MAX_STRING_VALUE}",
            )
    for name, number in numbers.items():
        if not math.isfinite(number):
            raise InvalidRequest(f"numeric_attributes[{name!r}]", "must be finite")


def check_context(context: Mapping[str, str]) -> None:
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise InvalidRequest("context", f"{len(context)} entries; at most {MAX_CONTEXT_ENTRIES}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in context.items())
    if size > MAX_CONTEXT_BYTES:
        raise InvalidRequest("context", f"{size} bytes; at most {MAX_CONTEXT_BYTES}")
