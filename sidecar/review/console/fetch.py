"""A text input read over HTTP for the item page: at most ``TEXT_CAP`` bytes, within
``TIMEOUT_SECONDS``, redirects not followed (a redirect could leave the allowed
prefix). A failure is shown on the page as a note beside the reference, never
raised: the reviewer can still decide from the context."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from sidecar.review.console.inputs import InputView, Shown

TIMEOUT_SECONDS = 2.0
TEXT_CAP = 64 * 1024
_TEXTUAL = ("text/", "application/json", "application/xml", "application/x-ndjson")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # answered as the 3xx it is


_OPENER = urllib.request.build_opener(_NoRedirects)


def read_text(url: str, timeout: float = TIMEOUT_SECONDS, cap: int = TEXT_CAP) -> InputView:
    """The text at url (an allowed http(s) prefix: ``inputs.kind_of`` said TEXT), or
    the reference with a note saying why it is not shown."""
    try:
        # Only URLs under the http(s) prefixes config.url_prefixes allows get here.
        with _OPENER.open(url, timeout=timeout) as response:
            kind = response.headers.get_content_type()
            if not kind.startswith(_TEXTUAL):
                return InputView(url, Shown.REFERENCE, note=f"not shown: its type is {kind}")
            body = response.read(cap + 1)
            charset = response.headers.get_content_charset() or "utf-8"
    except urllib.error.HTTPError as exc:
        return InputView(url, Shown.REFERENCE, note=f"not shown: HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return InputView(url, Shown.REFERENCE, note=f"not shown: {reason}")
    text = body[:cap].decode(charset, errors="replace")
    note = f"cut at {cap // 1024} KiB" if len(body) > cap else ""
    return InputView(url, Shown.TEXT, text=text, note=note)
