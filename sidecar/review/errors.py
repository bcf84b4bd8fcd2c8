"""Why the review queue refuses an operation on an item.

    NotFound (sidecar.errors)
    └── ItemNotFound          no item has the escalation_id asked for, or no open item
                              is left to claim
    Conflict (sidecar.errors)
    └── ItemConflict          the item's state forbids it: held by another reviewer, not
                              claimed, awaiting adjudication, or already resolved

Each inherits its gRPC status from the shared kind (NOT_FOUND, FAILED_PRECONDITION);
the console turns that status into its HTTP status."""

from __future__ import annotations

from sidecar.errors import Conflict, NotFound


class ItemNotFound(NotFound):
    """No item has the escalation_id asked for, or no open item is left to claim."""


class ItemConflict(Conflict):
    """The item's state forbids the operation: held by another reviewer, not claimed,
    awaiting adjudication, or already resolved."""
