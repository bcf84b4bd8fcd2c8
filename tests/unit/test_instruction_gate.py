"""The instruction gate's verdict: a scenario over its baseline by more than the
tolerance fails the gate; one under it by as much passes and asks for a re-baseline."""

from __future__ import annotations

import pytest

from benchmarks.instructions import TOLERANCE, main, verdict


def test_within_tolerance_passes() -> None:
    """A count a little above its baseline (the run-to-run noise) passes."""
    passed, rows = verdict({"unary_mix": 100_000 * (1 + TOLERANCE / 2)}, {"unary_mix": 100_000})
    assert passed
    assert rows[0]["status"] == "ok"


def test_a_regression_beyond_tolerance_fails() -> None:
    """One scenario over its baseline fails the whole gate."""
    passed, rows = verdict(
        {"unary_mix": 100_000, "batch_100": 105_000}, {"unary_mix": 100_000, "batch_100": 100_000}
    )
    assert not passed
    assert [row["status"] for row in rows] == ["ok", "REGRESSED"]


def test_an_improvement_passes_and_asks_for_a_rebaseline() -> None:
    """A count well under its baseline passes; the status says to lock the gain in."""
    passed, rows = verdict({"unary_mix": 80_000}, {"unary_mix": 100_000})
    assert passed
    assert rows[0]["status"].startswith("improved")


def test_a_scenario_without_a_baseline_is_new() -> None:
    """A scenario the baselines do not know yet is reported, not judged."""
    passed, rows = verdict({"batch_10": 1_000}, {})
    assert passed
    assert rows[0]["status"] == "new"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rebaseline", "--only", "unary_mix"], "--rebaseline counts every scenario"),
        (["--slowdown", "2"], "--slowdown: a share from 0 to 1"),
        (["--only", "nonesuch"], "--only: unknown scenario 'nonesuch'"),
    ],
)
def test_bad_options_are_refused_by_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options exit 2 with a message naming the option, before anything runs."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
