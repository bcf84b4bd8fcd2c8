"""Who is calling the registry, and what their roles let them do.

A caller proves who it is with a bearer token (``authorization: Bearer <token>``
metadata), of which the registry keeps only the sha256, or with a client
certificate when the registry serves mTLS (the certificate's subject common name
names the principal). Tokens are 256 random bits, so one unsalted sha256 is enough
to make a stolen database useless for calling the registry. Pure: the store lookup
is passed in."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping

from sidecar.errors import PermissionDenied, Unauthenticated
from sidecar.registry.model import Principal, Role

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


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(metadata: Mapping[str, str]) -> str:
    """The token of an ``authorization: Bearer ...`` header ('' when there is none)."""
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def identify(
    token: str,
    cert_subject: str,
    by_token: Callable[[str], Principal | None],
    by_subject: Callable[[str], Principal | None],
) -> Principal:
    """The principal a bearer token (preferred) or certificate subject belongs to."""
    if token:
        principal = by_token(hash_token(token))
        if principal is None:
            raise Unauthenticated("the bearer token belongs to no principal")
        return principal
    if cert_subject:
        principal = by_subject(cert_subject)
        if principal is None:
            raise Unauthenticated(f"the client certificate {cert_subject!r} names no principal")
        return principal
    raise Unauthenticated(
        "no credentials: send 'authorization: Bearer <token>' or a client certificate"
    )


def authorize(principal: Principal, method: str) -> None:
    allowed = METHOD_ROLES[method]
    if not principal.roles & allowed:
        held = ", ".join(sorted(principal.roles)) or "none"
        raise PermissionDenied(
            f"{principal.name} (roles: {held}) may not call {method}; "
            f"it needs one of: {', '.join(sorted(allowed))}"
        )
