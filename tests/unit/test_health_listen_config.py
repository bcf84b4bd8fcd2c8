"""HITL_REGISTRY_HEALTH_LISTEN, HITL_REVIEW_HEALTH_LISTEN and HITL_FEEDBACK_HEALTH_LISTEN:
off by default, HOST:PORT when set, on a port of their own; a bad value names its
variable."""

from __future__ import annotations

import pytest

from sidecar.errors import ConfigError
from sidecar.feedback.config import FeedbackConfig
from sidecar.registry.config import RegistryConfig
from sidecar.review.config import ReviewConfig

Config = type[RegistryConfig | ReviewConfig | FeedbackConfig]
# (settings class, variable prefix, what a load needs besides)
SERVICES: list[tuple[Config, str, dict[str, str]]] = [
    (RegistryConfig, "HITL_REGISTRY", {"HITL_REGISTRY_SIGNING_KEY": "signing.key"}),
    (ReviewConfig, "HITL_REVIEW", {}),
    (FeedbackConfig, "HITL_FEEDBACK", {}),
]
ids = [prefix for _, prefix, _ in SERVICES]


@pytest.mark.parametrize(("cls", "prefix", "needed"), SERVICES, ids=ids)
def test_off_by_default_and_set_by_variable_or_flag(
    cls: Config, prefix: str, needed: dict[str, str]
) -> None:
    """No health listener unless asked; the flag beats the variable."""
    assert cls.load(env=needed).health_listen == ""
    env = {**needed, f"{prefix}_HEALTH_LISTEN": "0.0.0.0:7440"}
    assert cls.load(env=env).health_listen == "0.0.0.0:7440"
    assert cls.load({"health_listen": "[::]:17440"}, env=env).health_listen == "[::]:17440"


@pytest.mark.parametrize(("cls", "prefix", "needed"), SERVICES, ids=ids)
@pytest.mark.parametrize("other", ["LISTEN", "METRICS_ADDR"])
def test_a_port_of_its_own(cls: Config, prefix: str, needed: dict[str, str], other: str) -> None:
    """A health port shared with the service's or the metrics port fails, naming both
    variables; port 0 never clashes."""
    env = {**needed, f"{prefix}_{other}": "127.0.0.1:7440"}
    with pytest.raises(ConfigError, match=f"{prefix}_HEALTH_LISTEN .* than {prefix}_{other}"):
        cls.load(env={**env, f"{prefix}_HEALTH_LISTEN": "0.0.0.0:7440"})
    zero = {**needed, f"{prefix}_{other}": "127.0.0.1:0", f"{prefix}_HEALTH_LISTEN": "[::]:0"}
    assert cls.load(env=zero).health_listen == "[::]:0"


@pytest.mark.parametrize(("cls", "prefix", "needed"), SERVICES, ids=ids)
def test_not_an_address_names_the_variable(
    cls: Config, prefix: str, needed: dict[str, str]
) -> None:
    """A value that is not HOST:PORT fails at load, naming the variable."""
    with pytest.raises(ConfigError, match=f"{prefix}_HEALTH_LISTEN must be HOST:PORT"):
        cls.load(env={**needed, f"{prefix}_HEALTH_LISTEN": "7440"})
