"""The shared kit's exceptions. Foreign errors are translated into these once, at
the boundary that meets them (``raise ... from exc``). Each class names the gRPC
status a caller gets for it in ``grpc_status``; a subclass inherits its parent's
unless it names its own, and ``sidecar.serving.status_of`` (the one mapping every
server uses) reads it. The HTTP services derive their status from the same code.

    HitlError                    grpc_status: INTERNAL unless a subclass says otherwise
    ├── RequestError             a caller's request cannot be served as sent
    │   ├── InvalidRequest       a field is missing, malformed or out of bounds
    │   └── RequestConflict      request_id reused for a different prediction
    ├── NotFound                 nothing has the key asked for
    ├── Conflict                 the target's state forbids the operation
    ├── Unauthenticated          no credentials, or credentials no principal holds
    ├── PermissionDenied         the principal's roles forbid it (or it approves itself)
    ├── RateLimited              a principal sent more than its rate allows
    ├── EscalationRefused        an escalation could not be recorded durably
    ├── StoreUnavailable         a service's database failed or is unreachable
    ├── SinkUnavailable          a sink cannot take escalations now (the forwarder retries)
    ├── SignatureError           a signed policy is unsigned, altered or from another key
    ├── PolicyError              a policy document is invalid (names the field)
    ├── CalibratorError          a calibrator artefact is missing, altered or broken
    ├── ConfigError              a start-up setting is invalid (names the variable)
    └── DataError                data given to a command is unusable (names its source)

A service's own errors live in its package and subclass these: the review queue's
in ``sidecar.review.errors`` (ItemNotFound is a NotFound, ItemConflict a Conflict),
the injector's in ``sidecar.injector.errors``. This module imports nothing, so that
every layer, the pure core included, may raise its errors.
"""

from __future__ import annotations

from typing import ClassVar, Literal

# The names of grpc.StatusCode, spelled out because this module may not import grpc
# (the core raises these errors); a test keeps the two in step.
StatusName = Literal[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


class HitlError(Exception):
    """Base of every error the project raises on purpose."""

    grpc_status: ClassVar[StatusName] = "INTERNAL"


class RequestError(HitlError):
    """A request the sidecar refuses; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def at(self, prefix: str) -> RequestError:
        """The same error with its field placed under prefix (for batch items)."""
        return type(self)(f"{prefix}.{self.field}", self.message)


class InvalidRequest(RequestError):
    """A field is missing, malformed or out of bounds."""

    grpc_status = "INVALID_ARGUMENT"


class RequestConflict(RequestError):
    """A request_id was reused for a different prediction within the replay window."""

    grpc_status = "ALREADY_EXISTS"


class NotFound(HitlError):
    """Nothing has the key asked for: no such revision, proposal, calibrator or item."""

    grpc_status = "NOT_FOUND"


class Conflict(HitlError):
    """The target's state forbids the operation: a proposal already decided, a policy
    that moved on since the change was based on it, a principal that already exists."""

    grpc_status = "FAILED_PRECONDITION"


class Unauthenticated(HitlError):
    """The call carries no credentials, or credentials no principal holds."""

    grpc_status = "UNAUTHENTICATED"


class PermissionDenied(HitlError):
    """The principal's roles forbid the operation, or it would approve its own change."""

    grpc_status = "PERMISSION_DENIED"


class RateLimited(HitlError):
    """A principal sent more than its rate allows; it may send again shortly."""

    grpc_status = "RESOURCE_EXHAUSTED"


class EscalationRefused(HitlError):
    """An escalation could not be recorded; the caller must not act on the decision."""

    grpc_status = "UNAVAILABLE"


class StoreUnavailable(HitlError):
    """A service's database failed or cannot be reached; the caller may retry."""

    grpc_status = "UNAVAILABLE"


class SinkUnavailable(HitlError):
    """A sink could not take a batch now (down, timed out, disconnected); nothing in
    the batch counts as delivered and the forwarder sends it again."""


class SignatureError(HitlError):
    """A signed policy is unsigned, altered, or signed by a key we do not trust."""


class PolicyError(HitlError):
    """A policy document is invalid; ``path`` names the field (``models.m.t_high``)."""

    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class CalibratorError(HitlError):
    """A calibrator artefact is missing, altered, inconsistent or fails to run."""


class ConfigError(HitlError):
    """A start-up setting is invalid."""


class DataError(HitlError):
    """Data given to a command is unusable; ``source`` names where it came from (a
    file and line, a flag, a call). The offline tools raise it for labelled model
    outputs that are empty, misshapen, non-finite, labelled out of range or too few
    for what was asked; the services' commands for event, escalation and manifest
    files and for an export whose rows do not match their manifest."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
