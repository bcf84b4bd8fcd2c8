"""What changed between two policy documents, field by field, for people to read.

Documents are the policy file's schema as plain data. Lists whose items carry an
identity (rules by ``id``, arms by ``name``) are compared by that identity, so a
rule moved or inserted shows as the rules it touches rather than as every rule
after it. Values are shown as compact JSON. Pure: no I/O."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_IDENTITY = ("id", "name")


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field's value before and after ("" when absent on that side)."""

    path: str
    before: str
    after: str


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[FieldChange]:
    """Every leaf that differs, in path order (no document before: every leaf)."""
    old = dict(_leaves(before or {}, ""))
    new = dict(_leaves(after, ""))
    return [
        FieldChange(path, old.get(path, ""), new.get(path, ""))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]


def _leaves(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        if not value and path:
            yield path, "{}"
        for key in value:
            yield from _leaves(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value and all(_identity(item)[0] for item in value):
        for item in value:
            key, name = _identity(item)
            rest = {k: v for k, v in item.items() if k != key}
            yield from _leaves(rest or {}, f"{path}.{name}")
    else:
        yield path, json.dumps(value, sort_keys=True, separators=(",", ":"))


def _identity(item: object) -> tuple[str, str]:
    """(the identity key, its value) of a list item, or ("", "") when it has none."""
    if isinstance(item, Mapping):
        for key in _IDENTITY:
            if isinstance(item.get(key), str):
                return key, str(item[key])
    return "", ""
