"""Who may do what in the review queue, and on whose behalf. Pure.

Roles: ``sidecar`` submits escalations; ``reviewer`` claims, resolves and releases
items for itself; ``lead`` may do that for another reviewer (recorded as such), list
and export; ``viewer`` lists; ``exporter`` exports the labelled items. In the web
console viewers, reviewers and leads see the queue and its items (``View``); acting
there takes the same roles as over gRPC. Who a claim or a verdict is for comes from
the caller's credential, never from a request field: the field may only name the
caller, or, for a lead, the reviewer the lead acts for.

An item needing several reviews: a reviewer sees how many answers are in, never
what they are (``sees_answers``); only a lead resolves one in adjudication."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from sidecar.auth import Principal, authorize
from sidecar.errors import PermissionDenied


class ReviewRole(enum.StrEnum):
    SIDECAR = "sidecar"
    REVIEWER = "reviewer"
    LEAD = "lead"
    VIEWER = "viewer"
    EXPORTER = "exporter"


METHOD_ROLES: Mapping[str, frozenset[str]] = {
    "Submit": frozenset({ReviewRole.SIDECAR}),
    "List": frozenset({ReviewRole.VIEWER, ReviewRole.LEAD}),
    "Claim": frozenset({ReviewRole.REVIEWER, ReviewRole.LEAD}),
    "Resolve": frozenset({ReviewRole.REVIEWER, ReviewRole.LEAD}),
    "Release": frozenset({ReviewRole.REVIEWER, ReviewRole.LEAD}),
    "Export": frozenset({ReviewRole.EXPORTER, ReviewRole.LEAD}),
    # A lead's bulk accept, and the revert of one resolution (queue.bulk_accept, revert).
    "BulkAccept": frozenset({ReviewRole.LEAD}),
    "Revert": frozenset({ReviewRole.LEAD}),
    # The web console's pages (the queue, an item) and its JSON list: not a gRPC
    # method. Reviewers see the queue there, in the order they would claim it.
    "View": frozenset({ReviewRole.VIEWER, ReviewRole.REVIEWER, ReviewRole.LEAD}),
    # The console's reviewer-quality page and its JSON: for leads and viewers.
    "Quality": frozenset({ReviewRole.VIEWER, ReviewRole.LEAD}),
}


def check_method(principal: Principal, method: str) -> None:
    """PermissionDenied unless the principal's roles allow method."""
    authorize(principal, method, METHOD_ROLES[method])


def sees_answers(principal: Principal) -> bool:
    """Whether the caller may see each reviewer's answers to an item: a lead, a
    viewer or an exporter; never a reviewer alone, who must answer without knowing
    the others' answers."""
    return any(principal.has(r) for r in (ReviewRole.LEAD, ReviewRole.VIEWER, ReviewRole.EXPORTER))


def reviewer_for(principal: Principal, named: str) -> tuple[str, str]:
    """(reviewer, acted_by) of a claim or verdict whose request names ``named``: the
    caller itself when named is empty or its own name; the named reviewer, with the
    caller as acted_by, for a lead; PermissionDenied for anyone else."""
    if not named or named == principal.name:
        return principal.name, ""
    if principal.has(ReviewRole.LEAD):
        return named, principal.name
    raise PermissionDenied(
        f"{principal.name} may not act for {named!r}: only a lead acts for another reviewer"
    )
