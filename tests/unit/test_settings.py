"""The settings kit: one declaration gives the loader, the flag and the reference row."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.settings import (
    add_flags,
    count,
    flag_values,
    optional_path,
    read,
    reference,
    setting,
)


@dataclass(frozen=True, slots=True)
class Example:
    key: Path = setting("X_KEY", help="the key", parse=optional_path)
    batch: int = setting("X_BATCH", 8, "items per batch (at most 10)", parse=count(1, 10))
    ratio: float = setting("X_RATIO", 0.5, "a share")
    on: bool = setting("X_ON", True, "whether it runs", flag="enabled")
    name: str = setting("X_NAME", "", "a name | with a bar", secret=True)


def test_one_declaration_gives_value_flag_and_row() -> None:
    """Defaults, the environment, a flag over both; the flag is named after the field
    (or as declared); the reference table lists each with its default."""
    parser = argparse.ArgumentParser()
    add_flags(parser, Example)
    args = parser.parse_args(["--key", "k.pem", "--enabled", "no"])
    values = read(Example, flag_values(args, Example), env={"X_BATCH": "3", "X_ON": "true"})
    assert values == {"key": Path("k.pem"), "batch": 3, "ratio": 0.5, "on": False, "name": ""}
    table = reference(Example)
    assert "| `X_KEY` | `--key` | required | the key |" in table
    assert "| `X_BATCH` | `--batch` | `8` | items per batch (at most 10) |" in table
    assert "| `X_ON` | `--enabled` | `true` |" in table
    assert "| `X_NAME` | `--name` | off | a name \\| with a bar |" in table
    assert "s3cret" not in repr(Example(key=Path("k"), name="s3cret"))  # secret: not shown


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, r"X_KEY \(or --key\) is required: the key"),
        ({"X_KEY": "k", "X_BATCH": "11"}, "X_BATCH must be between 1 and 10, got '11'"),
        ({"X_KEY": "k", "X_BATCH": "two"}, "X_BATCH must be a number"),
        ({"X_KEY": "k", "X_RATIO": "-1"}, "X_RATIO must be positive"),
        ({"X_KEY": "k", "X_ON": "maybe"}, "X_ON must be true or false"),
    ],
)
def test_a_bad_or_missing_value_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read(Example, env=env)


def test_a_count_from_zero_takes_zero_and_refuses_what_is_below() -> None:
    """count(low=0): 0 is a value (a setting that is off), -1 and text are refused."""
    parse = count(low=0)
    assert parse("0", "X_ROWS") == 0
    assert parse("12", "X_ROWS") == 12
    for bad in ("-1", "many"):
        with pytest.raises(ConfigError, match="X_ROWS"):
            parse(bad, "X_ROWS")
    with pytest.raises(ConfigError, match="X_ROWS must be positive"):
        count(low=1)("0", "X_ROWS")
