"""The review queue's settings: defaults, environment, flags over environment, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.review.config import ReviewConfig


def test_defaults() -> None:
    """Loopback 7432, SQLite under hitl-state, default SLA, no metrics endpoint."""
    config = ReviewConfig.load(env={})
    assert (config.listen, config.db, config.metrics_addr) == (
        "127.0.0.1:7432",
        "sqlite:hitl-state/review.db",
        "",
    )
    assert config.sla.seconds["HUMAN_PRIMARY"] == 900.0
    assert (config.sweep_seconds, config.workers, config.port_file) == (10.0, 16, None)


def test_environment_and_flags() -> None:
    """Variables set the values; flags (overrides not None) win over them."""
    env = {
        "HITL_REVIEW_LISTEN": "0.0.0.0:9000",
        "HITL_REVIEW_DB": "postgresql://postgres@127.0.0.1:5432/test",
        "HITL_REVIEW_SLA": "HUMAN_PRIMARY=60",
        "HITL_REVIEW_SWEEP_SECONDS": "2.5",
        "HITL_REVIEW_METRICS_ADDR": "127.0.0.1:9464",
        "HITL_LOG_LEVEL": "WARNING",
    }
    config = ReviewConfig.load({"listen": "127.0.0.1:0", "port_file": "p", "db": None}, env)
    assert config.listen == "127.0.0.1:0"
    assert config.db == "postgresql://postgres@127.0.0.1:5432/test"
    assert config.sla.seconds["HUMAN_PRIMARY"] == 60.0
    assert (config.sweep_seconds, config.metrics_addr, config.log_level) == (
        2.5,
        "127.0.0.1:9464",
        "warning",
    )
    assert config.port_file == Path("p")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"listen": "7432"}, "HITL_REVIEW_LISTEN"),
        ({"listen": "127.0.0.1:99999"}, "HITL_REVIEW_LISTEN"),
        ({"db": "mysql://db/x"}, "HITL_REVIEW_DB"),
        ({"db": "sqlite:"}, "HITL_REVIEW_DB"),
        ({"sla": "HUMAN_PRIMARY=never"}, "HITL_REVIEW_SLA"),
        ({"sweep_seconds": "0"}, "HITL_REVIEW_SWEEP_SECONDS"),
        ({"metrics_addr": "nowhere"}, "HITL_REVIEW_METRICS_ADDR"),
        ({"workers": "-1"}, "HITL_REVIEW_WORKERS"),
        ({"log_level": "loud"}, "HITL_LOG_LEVEL"),
    ],
)
def test_bad_values_fail_at_start_up(overrides: dict[str, str], variable: str) -> None:
    """Each bad value is a ConfigError naming its variable."""
    with pytest.raises(ConfigError, match=variable):
        ReviewConfig.load(overrides, env={})


def test_sqlite_paths() -> None:
    """sqlite:PATH, sqlite:///absolute and a bare path are all SQLite files."""
    for db in ("sqlite:review.db", "sqlite:///var/lib/review.db", "review.db"):
        assert ReviewConfig.load({"db": db}, env={}).db == db
