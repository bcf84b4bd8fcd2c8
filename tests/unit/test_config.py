"""Start-up configuration: environment, overrides, and clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import ENV_LISTEN, ENV_POLICY, ENV_REPLAY_TTL, SidecarConfig
from sidecar.errors import ConfigError


def test_environment_and_defaults() -> None:
    """Settings come from the environment; derived paths sit in the state dir."""
    config = SidecarConfig.load(env={ENV_POLICY: "p.yaml", ENV_REPLAY_TTL: "30"})
    assert config.policy == Path("p.yaml")
    assert config.replay_ttl_seconds == 30.0
    assert config.audit_path == "hitl-state/audit.jsonl"
    assert config.spool_dir == Path("hitl-state/spool")
    assert config.spool_fsync is True


def test_overrides_beat_environment() -> None:
    """An explicit argument wins over the variable; None leaves the variable in force."""
    env = {ENV_POLICY: "env.yaml", ENV_LISTEN: "127.0.0.1:9"}
    config = SidecarConfig.load({"policy": "arg.yaml", "listen": None}, env=env)
    assert (config.policy, config.listen) == (Path("arg.yaml"), "127.0.0.1:9")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, ENV_POLICY),
        ({ENV_POLICY: "p", ENV_LISTEN: "nowhere"}, ENV_LISTEN),
        ({ENV_POLICY: "p", ENV_LISTEN: "unix:"}, ENV_LISTEN),
        ({ENV_POLICY: "p", ENV_REPLAY_TTL: "-1"}, ENV_REPLAY_TTL),
        ({ENV_POLICY: "p", ENV_REPLAY_TTL: "soon"}, ENV_REPLAY_TTL),
        ({ENV_POLICY: "p", "HITL_LOG_LEVEL": "loud"}, "HITL_LOG_LEVEL"),
        ({ENV_POLICY: "p", "HITL_METRICS_ADDR": "9464"}, "HITL_METRICS_ADDR"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    """A bad setting fails at start-up with the variable's name in the message."""
    with pytest.raises(ConfigError, match=named):
        SidecarConfig.load(env=env)


def test_unix_socket_accepted() -> None:
    """unix:PATH is a valid listen address."""
    assert (
        SidecarConfig.load({"listen": "unix:/tmp/h.sock"}, env={ENV_POLICY: "p"}).listen
        == "unix:/tmp/h.sock"
    )
