"""What each principal's roles let it do in the registry (``sidecar.auth`` says how a
caller is identified)."""

from __future__ import annotations

from collections.abc import Mapping

from sidecar.auth import Principal
from sidecar.auth import authorize as check_roles
from sidecar.registry.model import Role

_EVERYONE = frozenset(Role)
_PEOPLE = frozenset({Role.VIEWER, Role.OPERATOR, Role.APPROVER})
_CHANGERS = frozenset({Role.OPERATOR, Role.APPROVER})

# The roles that may call each rpc (any one of them is enough). What depends on the
# data (no self-approval; only an author or an approver may reject) is checked by
# sidecar.registry.service.
METHOD_ROLES: Mapping[str, frozenset[Role]] = {
    "GetPolicy": _EVERYONE,
    "Watch": _EVERYONE,
    "GetCalibrator": _EVERYONE,
    "History": _PEOPLE,
    "ListProposals": _PEOPLE,
    "ProposeChange": _CHANGERS,
    "Rollback": _CHANGERS,
    "PutCalibrator": _CHANGERS,
    "Reject": _CHANGERS,
    "Approve": frozenset({Role.APPROVER}),
}


def authorize(principal: Principal, method: str) -> None:
    """PermissionDenied unless the principal may call the registry's method."""
    check_roles(principal, method, METHOD_ROLES[method])
