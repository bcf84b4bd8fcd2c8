"""What every hitl process's settings share: the common variables, the checks of a
value (each failing with a ConfigError that names its variable), and where the
sidecar keeps its state. Each process's own settings module builds on these."""

from __future__ import annotations

import math

from sidecar.errors import ConfigError

ENV_LOG_LEVEL = "HITL_LOG_LEVEL"
ENV_GRACE = "HITL_SHUTDOWN_GRACE_SECONDS"
ENV_STATE_DIR = "HITL_STATE_DIR"
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})
# Under the state directory: the escalation spools, and the last-known-good policy
# (with its calibrators) of a sidecar fed by the registry.
SPOOL_DIR, DEAD_LETTER_DIR, POLICY_DIR = "spool", "dead-letter", "policy"


def positive(value: str, var: str) -> float:
    """value as a finite number above 0; ConfigError naming var otherwise."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{var} must be positive, got {value!r}")
    return number


def check_log_level(level: str) -> None:
    if level not in LOG_LEVELS:
        raise ConfigError(f"{ENV_LOG_LEVEL} must be one of {sorted(LOG_LEVELS)}, got {level!r}")


def check_address(address: str, var: str) -> None:
    """HOST:PORT with a port up to 65535."""
    split_host_port(address, var)


def split_host_port(address: str, var: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{var} must be HOST:PORT, got {address!r}")
    return host, int(port)
