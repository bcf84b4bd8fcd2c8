"""The sidecar's exceptions. Foreign errors are translated into these once, at the
boundary that meets them (``raise ... from exc``); ``sidecar.server`` maps them to
gRPC status codes in one table.

    HitlError
    ├── RequestError             a caller's request cannot be served as sent
    │   ├── InvalidRequest       a field is missing, malformed or out of bounds
    │   └── RequestConflict      request_id reused for a different prediction
    ├── EscalationRefused        an escalation could not be recorded durably
    ├── StoreUnavailable         a service's database failed or is unreachable
    ├── ReviewError              the review queue cannot do what was asked
    │   ├── ItemNotFound         no such escalation_id, or nothing open to claim
    │   └── ItemConflict         the item's state forbids it (held by another, resolved)
    ├── RegistryError            the registry cannot do what was asked
    │   ├── NotFound             no such revision, proposal or calibrator
    │   ├── Conflict             the proposal is decided, or the head moved under it
    │   ├── Unauthenticated      no credentials, or credentials no principal holds
    │   └── PermissionDenied     the principal's roles forbid it (or it approves itself)
    ├── RateLimited              a principal sent more than its rate allows
    ├── SignatureError           a signed policy is unsigned, altered or from another key
    ├── SinkUnavailable          a sink cannot take escalations now (the forwarder retries)
    ├── PolicyError              a policy document is invalid (names the field)
    ├── CalibratorError          a calibrator artefact is missing, altered or broken
    ├── ConfigError              a start-up setting is invalid (names the variable)
    └── DataError                an offline input file (labelled outputs) is unusable
"""

from __future__ import annotations


class HitlError(Exception):
    """Base of every error the sidecar raises on purpose."""


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


class RequestConflict(RequestError):
    """A request_id was reused for a different prediction within the replay window."""


class EscalationRefused(HitlError):
    """An escalation could not be recorded; the caller must not act on the decision."""


class SinkUnavailable(HitlError):
    """A sink could not take a batch now (down, timed out, disconnected); nothing in
    the batch counts as delivered and the forwarder sends it again."""


class ReviewError(HitlError):
    """The review queue refuses or cannot complete an operation on its items."""


class ItemNotFound(ReviewError):
    """No item has the escalation_id asked for, or no open item is left to claim."""


class ItemConflict(ReviewError):
    """The item's state forbids the operation: held by another reviewer, not claimed,
    or already resolved."""


class StoreUnavailable(HitlError):
    """A service's database failed or cannot be reached; the caller may retry."""


class RegistryError(HitlError):
    """The registry refuses or cannot complete an operation."""


class NotFound(RegistryError):
    """No revision, proposal or calibrator has the key asked for."""


class Conflict(RegistryError):
    """The proposal is no longer pending, or the policy moved on since it was based."""


class Unauthenticated(RegistryError):
    """The call carries no credentials, or credentials no principal holds."""


class PermissionDenied(RegistryError):
    """The principal's roles forbid the operation, or it would approve its own change."""


class SignatureError(HitlError):
    """A signed policy is unsigned, altered, or signed by a key we do not trust."""


class PolicyError(HitlError):
    """A policy document is invalid; ``path`` names the field (``models.m.t_high``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class CalibratorError(HitlError):
    """A calibrator artefact is missing, altered, inconsistent or fails to run."""


class ConfigError(HitlError):
    """A start-up setting is invalid."""


class DataError(HitlError):
    """A file of labelled model outputs given to the offline tools is unusable: empty,
    misshapen, non-finite, labels out of range, or too small for what was asked."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class RateLimited(HitlError):
    """A principal sent more than its rate allows; it may send again shortly."""
