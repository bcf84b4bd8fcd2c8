"""The one mapping from errors to gRPC status codes that every server uses: each error
class names its status, a subclass inherits its nearest ancestor's unless it names its
own, and an error that names none is INTERNAL."""

from __future__ import annotations

from typing import get_args

import grpc
import pytest

from sidecar import errors
from sidecar.escalation.spool import SpoolBusy, SpoolFull
from sidecar.injector.errors import InjectionRefused
from sidecar.policy.last_known_good import DigestMismatch
from sidecar.review.errors import ItemConflict, ItemNotFound
from sidecar.serving import status_of


class LaterItemError(ItemNotFound):
    """A subclass a later change might add."""


class LaterServiceError(errors.HitlError):
    """A later service's error that names its own status."""

    grpc_status = "ABORTED"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidRequest("f", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.RequestConflict("request_id", "reused"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.RequestError("f", "bad"), grpc.StatusCode.INTERNAL),
        (errors.PolicyError("models.m", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("no revision 7"), grpc.StatusCode.NOT_FOUND),
        (errors.Conflict("decided"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.RateLimited("slow down"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.EscalationRefused("disk"), grpc.StatusCode.UNAVAILABLE),
        (errors.StoreUnavailable("db down"), grpc.StatusCode.UNAVAILABLE),
        (errors.SinkUnavailable("nats down"), grpc.StatusCode.INTERNAL),
        (errors.SignatureError("altered"), grpc.StatusCode.INTERNAL),
        (errors.CalibratorError("broken"), grpc.StatusCode.INTERNAL),
        (errors.ConfigError("HITL_X: bad"), grpc.StatusCode.INTERNAL),
        (errors.DataError("a.npz", "empty"), grpc.StatusCode.INTERNAL),
        (errors.HitlError("?"), grpc.StatusCode.INTERNAL),
        # Defined outside sidecar.errors: services' own errors inherit or name theirs.
        (ItemNotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (ItemConflict("claimed by alice"), grpc.StatusCode.FAILED_PRECONDITION),
        (LaterItemError("gone"), grpc.StatusCode.NOT_FOUND),
        (SpoolFull("full"), grpc.StatusCode.UNAVAILABLE),
        (SpoolBusy("locked"), grpc.StatusCode.INTERNAL),
        (DigestMismatch("altered"), grpc.StatusCode.INTERNAL),
        (InjectionRefused("bad annotation"), grpc.StatusCode.INTERNAL),
        (LaterServiceError("retry"), grpc.StatusCode.ABORTED),
    ],
)
def test_errors_map_through_their_hierarchy(exc: errors.HitlError, code: grpc.StatusCode) -> None:
    """The kit's errors, services' subclasses of them, and errors that name no status."""
    assert status_of(exc) is code


def test_every_status_name_is_a_grpc_code() -> None:
    """The names an error may give are exactly grpc.StatusCode's, so none fails to map."""
    assert set(get_args(errors.StatusName)) == {code.name for code in grpc.StatusCode}
