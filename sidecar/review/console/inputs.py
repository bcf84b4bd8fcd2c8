"""Which inputs the console may show, and how. Pure: the fetch itself is
``fetch.read_text``.

An escalation's ``input_ref`` is shown only when it starts with one of the configured
URL prefixes (``HITL_REVIEW_CONSOLE_INPUT_PREFIXES``) and has no ``..`` segment
(which could climb out of the prefix): an image (by its extension) as ``<img>``,
which the browser loads from there (the Content-Security-Policy's ``img-src``
lists exactly those prefixes); anything else as text the console fetches itself and
shows escaped. Any other reference is shown as text, never followed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote, urlsplit

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".avif")


class Shown(StrEnum):
    IMAGE = "image"
    TEXT = "text"
    REFERENCE = "reference"  # not rendered: shown as the reference itself


@dataclass(frozen=True, slots=True)
class InputView:
    ref: str
    kind: Shown
    text: str = ""  # a text input's content (kind TEXT)
    note: str = ""  # why it is not rendered, or that it was cut


def kind_of(ref: str, prefixes: Sequence[str]) -> Shown:
    """How ref may be shown under the allow-list prefixes."""
    if not ref or not any(ref.startswith(prefix) for prefix in prefixes):
        return Shown.REFERENCE
    path = urlsplit(ref).path
    if ".." in unquote(path).split("/"):
        return Shown.REFERENCE
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return Shown.IMAGE
    return Shown.TEXT


def content_security_policy(prefixes: Sequence[str]) -> str:
    """The console's CSP: its own scripts, styles and forms only; images also from
    the input prefixes; never framed."""
    images = " ".join(("'self'", *prefixes))
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
