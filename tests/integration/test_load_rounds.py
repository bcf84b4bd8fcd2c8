"""benchmarks.load_rounds, the tool for profiling and A/B rounds: it starts the
benchmark's own sidecar (or the floor), loads it at each rate in turn, reports
every round, runs the profile command beside the last one, and leaves no state
behind."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from benchmarks import load_rounds

pytestmark = pytest.mark.integration


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> list[str]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert load_rounds.main(["--seconds", "1", "--rounds", "1", "--workers", "1", *args]) == 0
    assert not list(tmp_path.glob("hitl-rounds-*")), "the run's directory is left behind"
    return capsys.readouterr().out.splitlines()


def rounds(lines: list[str]) -> list[dict[str, str]]:
    pattern = re.compile(
        r"rate +(?P<rate>\d+)/s achieved +(?P<achieved>\d+)/s errors (?P<errors>\d+)"
        r" .*escalated p50 (?P<escalated>\S+) p99 \S+, others p50 (?P<others>[\d.]+)"
        r" .*cpu us/call main (?P<main>\d+) threads (?P<threads>\d+) children (?P<children>\d+)"
    )
    found = [pattern.match(line) for line in lines if line.startswith("rate")]
    assert all(found), lines
    return [match.groupdict() for match in found if match]


def test_sidecar_rounds_at_each_rate_with_the_profile_beside_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "profiled"
    lines = run(
        tmp_path, monkeypatch, capsys, "--rates", "100,200",
        "--profile", f"sh -c 'echo {{pid}} {{seconds}} > {marker}'",
    )  # fmt: skip
    pid = lines[0].removeprefix("sidecar pid ")
    assert pid.isdigit()
    reported = rounds(lines)
    assert [r["rate"] for r in reported] == ["100", "200"]
    for r in reported:
        assert r["errors"] == "0"
        assert r["escalated"] != "nan"  # a third of the benchmark's mix is escalated
        assert int(r["main"]) > 0
    assert marker.read_text().split() == [pid, "1"]


def test_floor_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = run(tmp_path, monkeypatch, capsys, "--floor", "--rates", "200")
    assert lines[0].startswith("floor pid ")
    [reported] = rounds(lines)
    assert reported["errors"] == "0"
    assert reported["escalated"] == "nan"  # the floor escalates nothing
    assert int(reported["main"]) > 0
