"""The contract: committed stubs are fresh, and the core's enums mirror the proto's."""

from __future__ import annotations

import filecmp
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest

from hitl_client.stubs.hitl.v1 import decision_pb2
from sidecar.core.decision import Reason
from sidecar.core.request import InputKind
from sidecar.core.thresholds import Tier

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    """Regenerating from proto/ gives the committed client/hitl_client/stubs and
    sidecar/feedback/stubs byte for byte."""
    sys.path.insert(0, str(ROOT / "proto"))
    try:
        import codegen
    finally:
        sys.path.pop(0)
    codegen.generate(tmp_path / "out", tmp_path / "connect")
    stale: list[str] = []

    def walk(d: filecmp.dircmp[str], prefix: str) -> None:
        stale.extend(prefix + f for f in d.left_only + d.right_only + d.diff_files)
        for name, sub in d.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    for made, committed in (
        ("out", ROOT / "client" / "hitl_client" / "stubs"),
        ("connect", ROOT / "sidecar" / "feedback" / "stubs"),
    ):
        walk(filecmp.dircmp(tmp_path / made, committed, ignore=["__pycache__"]), f"{made}/")
    assert stale == [], f"stale stubs, run `make proto`: {stale}"


@pytest.mark.parametrize(
    ("enum", "proto", "prefix"),
    [
        (Tier, decision_pb2.Tier, "TIER_"),
        (Reason, decision_pb2.Reason, "REASON_"),
        (InputKind, decision_pb2.InputKind, "INPUT_KIND_"),
    ],
)
def test_core_enums_mirror_proto(enum: type[IntEnum], proto: Any, prefix: str) -> None:
    """Every core enum member has the proto value of the same name."""
    for member in enum:
        assert proto.Value(prefix + member.name) == member.value
