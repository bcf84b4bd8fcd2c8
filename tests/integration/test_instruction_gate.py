"""The instruction gate tested on itself: under callgrind, the benchmark's mix counted
as it is and again with about 5 % more work inside every Route; the slowed count
must fail the gate against the plain one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.instructions import TOLERANCE, count, verdict

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_five_percent_slower_route_fails_the_gate(tmp_path: Path) -> None:
    """A deliberate 5 % slowdown of the hot path is caught; the plain count is not."""
    measured = count(tmp_path, ["unary_mix"], 0.05)
    plain, slowed = measured["unary_mix"], measured["unary_mix+slowdown"]

    assert 1.04 <= slowed / plain <= 1.07  # the slowdown is what it claims to be
    passed, rows = verdict({"unary_mix": slowed}, {"unary_mix": plain})
    assert not passed
    assert rows[0]["status"] == "REGRESSED"
    assert verdict({"unary_mix": plain}, {"unary_mix": plain})[0]
    assert TOLERANCE < 0.04
