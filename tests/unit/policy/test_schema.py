"""The published JSON Schema of the policy file (docs/policy.schema.json) agrees with
the sidecar's own validation: the documented example passes both, each object allows
exactly the fields the compiler allows, and bad documents fail both."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sidecar.core.policy import parse_policy
from sidecar.core.rules import OPS, SIGNAL_FIELDS
from sidecar.errors import PolicyError

DOCS = Path(__file__).resolve().parents[3] / "docs"
SCHEMA = json.loads((DOCS / "policy.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def documented_example() -> dict[str, Any]:
    """The YAML example of docs/policy.md, with timestamps as text (as JSON has them)."""
    text = (DOCS / "policy.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    doc: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(block[1]), default=str))
    return doc


def at(node: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def test_the_documented_example_passes_both() -> None:
    doc = documented_example()
    VALIDATOR.validate(doc)
    assert "fraud" in parse_policy(doc).models


MODEL = ("models", "fraud")
# Each object of a policy, and where the schema describes it.
OBJECTS: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = [
    ((), ()),
    (MODEL, ("$defs", "model")),
    ((*MODEL, "calibrator"), ("$defs", "model", "properties", "calibrator")),
    ((*MODEL, "thresholds"), ("$defs", "thresholds")),
    ((*MODEL, "domains", "eu"), ("$defs", "thresholds")),
    ((*MODEL, "rules", 0), ("$defs", "rule")),
    ((*MODEL, "rules", 0, "when", 0), ("$defs", "condition")),
    ((*MODEL, "experiment"), ("$defs", "experiment")),
    ((*MODEL, "experiment", "arms", 1), ("$defs", "experiment", "properties", "arms", "items")),
]


@pytest.mark.parametrize(("path", "schema_path"), OBJECTS)
def test_each_object_allows_what_the_compiler_allows(
    path: tuple[str | int, ...], schema_path: tuple[str, ...]
) -> None:
    """An unknown field fails both; the fields the compiler lists as allowed are the
    schema's properties of that object."""
    doc = documented_example()
    at(doc, path)["not_a_field"] = 1
    assert not VALIDATOR.is_valid(doc)
    with pytest.raises(PolicyError, match="unknown field") as raised:
        parse_policy(doc)
    allowed = re.search(r"allowed: ([^)]*)\)", str(raised.value))
    assert allowed is not None
    assert set(allowed[1].split(", ")) == set(at(SCHEMA, schema_path)["properties"])


def test_conditions_name_the_compilers_fields_and_operators() -> None:
    condition = SCHEMA["$defs"]["condition"]["properties"]
    assert set(condition["op"]["enum"]) == OPS
    named = re.findall(r"[a-z_]+", condition["field"]["pattern"].split("|", 1)[1])
    assert set(named) == SIGNAL_FIELDS


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        at(doc, path[:-1])[path[-1]] = value

    return change


def _drop(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    return lambda doc: at(doc, path[:-1]).pop(path[-1])


BAD: list[Callable[[dict[str, Any]], None]] = [
    _set(("revision",), 0),
    _drop(("models",)),
    _set(("models",), {}),
    _set(("models", "bad name!"), {}),
    _set((*MODEL, "thresholds", "t_high"), 1.5),
    _drop((*MODEL, "thresholds", "t_low")),
    _set((*MODEL, "calibrator", "sha256"), "3f1c"),
    _set((*MODEL, "calibrator", "name"), "both-path-and-name"),
    _set((*MODEL, "rules", 0, "id"), "no spaces"),
    _set((*MODEL, "rules", 0, "when"), []),
    _set((*MODEL, "rules", 0, "when", 0, "op"), "gtx"),
    _set((*MODEL, "rules", 0, "when", 0, "field"), "amount"),
    _set((*MODEL, "rules", 0, "when", 0, "value"), "many"),
    _set((*MODEL, "rules", 1, "when", 0, "value"), "self-harm"),
    _set((*MODEL, "experiment", "unit"), "customer"),
    _set((*MODEL, "experiment", "arms"), [{"name": "only", "weight": 1}]),
    _set((*MODEL, "experiment", "arms", 0, "weight"), -1),
    _drop((*MODEL, "experiment", "arms", 1, "thresholds")),
    _set((*MODEL, "audit_sample_rate"), 2),
    _drop(("issued_at",)),
]


@pytest.mark.parametrize("change", BAD)
def test_bad_documents_fail_both(change: Callable[[dict[str, Any]], None]) -> None:
    doc = documented_example()
    change(doc)
    assert not VALIDATOR.is_valid(doc)
    with pytest.raises(PolicyError):
        parse_policy(doc)
