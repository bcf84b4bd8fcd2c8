"""Kubernetes resource quantities (``500m``, ``256Mi``, ``1.5G``), checked before they
reach the API server so a bad annotation is refused with its name, and converted to
numbers where the sidecar needs one (the spool budget). No I/O here."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6)}
_DECIMAL |= {"G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15)}
_DECIMAL["E"] = Decimal(10**18)
_FORM = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?P<suffix>[a-zA-Z]{0,2})")


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity (``256Mi`` -> 268435456); ValueError naming the form
    expected. Exponent forms (``1e3``) and signs are refused: a sidecar's resources
    are written as plain positive quantities."""
    match = _FORM.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity such as 250m, 1, 256Mi or 1Gi")
    suffix = match["suffix"]
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text!r} is not a number") from None
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    known = ", ".join([*_BINARY, *(s for s in _DECIMAL if s)])
    raise ValueError(f"{text!r} has an unknown suffix {suffix!r} (known: {known})")
