"""The console's signed cookie and sealed evidence.

A session is a cookie signed with the console's key (itsdangerous, HMAC-SHA1 over
a timestamped payload): the sha256 of the queue token the reviewer signed in with
(looked up in the store on every request, so replacing or removing the principal's
token ends its sessions), and the CSRF token every form must carry back. A browser
behind the single sign-on proxy gets a session too, holding only the CSRF token.
The cookie is HttpOnly, SameSite=Strict, Secure when the console serves TLS, and
lives ``SESSION_SECONDS``.

The evidence an item page shows is sealed with the same key (another salt) into the
page's forms, so what a verdict records is what the console showed, not what a
browser says it was shown. A lead's bulk accept preview is sealed the same way (its
own salt) into the page's accept form, so an accept is always of a filter the lead
previewed, lately, and takes no more items than the preview listed."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

from sidecar.errors import InvalidRequest

COOKIE = "hitl_console"
SESSION_SECONDS = 12 * 3600
EVIDENCE_SECONDS = 24 * 3600  # an item page older than this cannot be acted on
PREVIEW_SECONDS = 15 * 60  # a bulk accept preview older than this must be run again


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    token_sha256: str = ""  # empty: not signed in with a token (anonymous, or the proxy's)


class Sessions:
    def __init__(self, key: bytes, secure: bool) -> None:
        self.secure = secure
        self._cookies = URLSafeTimedSerializer(key, salt="hitl-review-console-session")
        self._evidence = URLSafeTimedSerializer(key, salt="hitl-review-console-evidence")
        self._previews = URLSafeTimedSerializer(key, salt="hitl-review-console-bulk-preview")

    def new(self, token_sha256: str = "") -> Session:
        """A fresh session (a new CSRF token: signing in rotates it)."""
        return Session(secrets.token_urlsafe(32), token_sha256)

    def encode(self, session: Session) -> str:
        return self._cookies.dumps({"csrf": session.csrf, "t": session.token_sha256})

    def decode(self, cookie: str) -> Session | None:
        """The session a cookie holds; None when it is missing, forged or expired."""
        if not cookie:
            return None
        try:
            data = self._cookies.loads(cookie, max_age=SESSION_SECONDS)
        except BadData:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        return Session(data["csrf"], str(data.get("t", "")))

    def cookie_options(self) -> dict[str, Any]:
        return {
            "max_age": SESSION_SECONDS,
            "httponly": True,
            "samesite": "strict",
            "secure": self.secure,
            "path": "/",
        }

    def seal(self, evidence: dict[str, Any]) -> str:
        return self._evidence.dumps(evidence)

    def unseal(self, sealed: str, escalation_id: str) -> str:
        """The evidence JSON text a form carried for escalation_id; InvalidRequest
        naming ``evidence`` when it was altered, is stale or is another item's."""
        try:
            evidence = self._evidence.loads(sealed, max_age=EVIDENCE_SECONDS)
        except BadData:
            raise InvalidRequest("evidence", "altered or stale; reload the item") from None
        if not isinstance(evidence, dict) or evidence.get("escalation_id") != escalation_id:
            raise InvalidRequest("evidence", "was shown for another item; reload the item")
        return json.dumps(evidence, sort_keys=True, separators=(",", ":"))

    def seal_preview(self, preview: dict[str, Any]) -> str:
        return self._previews.dumps(preview)

    def unseal_preview(self, sealed: str) -> dict[str, Any]:
        """The bulk accept preview a form carried; InvalidRequest naming ``preview``
        when it is missing, altered or older than PREVIEW_SECONDS."""
        try:
            preview = self._previews.loads(sealed, max_age=PREVIEW_SECONDS)
        except BadData:
            raise InvalidRequest(
                "preview",
                f"missing, altered or older than {PREVIEW_SECONDS // 60} min: preview again",
            ) from None
        if not isinstance(preview, dict):
            raise InvalidRequest("preview", "altered: preview again")
        return preview


def same_token(given: str, expected: str) -> bool:
    """A CSRF check in constant time; an empty token never matches."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())
