"""The one mapping from errors to gRPC status codes that every server uses: a subclass
takes its nearest listed ancestor's status, and an unlisted error is INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from sidecar import errors
from sidecar.escalation.spool import SpoolFull
from sidecar.serving import STATUS, status_of


class LaterItemError(errors.ItemNotFound):
    """A subclass a later change might add."""


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidRequest("f", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.RequestConflict("request_id", "reused"), grpc.StatusCode.ALREADY_EXISTS),
        (SpoolFull("full"), grpc.StatusCode.UNAVAILABLE),
        (LaterItemError("gone"), grpc.StatusCode.NOT_FOUND),
        (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.PolicyError("models.m", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.CalibratorError("broken"), grpc.StatusCode.INTERNAL),
    ],
)
def test_errors_map_through_their_hierarchy(exc: errors.HitlError, code: grpc.StatusCode) -> None:
    """Listed errors, their subclasses, and an unlisted error."""
    assert status_of(exc) is code


def test_every_listed_error_is_one_of_ours() -> None:
    """The table holds the project's errors only, so a foreign exception never maps."""
    assert all(issubclass(kind, errors.HitlError) for kind in STATUS)
