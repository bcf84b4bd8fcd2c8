"""The sidecar's settings: one frozen object, validated at start-up.

Every environment variable is a constant here. Explicit arguments (the CLI's flags)
override the environment; a bad value fails at start-up naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError

ENV_LISTEN = "HITL_LISTEN"
ENV_POLICY = "HITL_POLICY"
ENV_STATE_DIR = "HITL_STATE_DIR"
ENV_AUDIT_LOG = "HITL_AUDIT_LOG"
ENV_ESCALATION_LOG = "HITL_ESCALATION_LOG"
ENV_METRICS_ADDR = "HITL_METRICS_ADDR"
ENV_LOG_LEVEL = "HITL_LOG_LEVEL"
ENV_POLICY_POLL = "HITL_POLICY_POLL_SECONDS"
ENV_REPLAY_TTL = "HITL_REPLAY_TTL_SECONDS"
ENV_REPLAY_CAPACITY = "HITL_REPLAY_CAPACITY"
ENV_GRACE = "HITL_SHUTDOWN_GRACE_SECONDS"
ENV_PORT_FILE = "HITL_PORT_FILE"

DEFAULT_LISTEN = "127.0.0.1:7431"
_LEVELS = frozenset({"debug", "info", "warning", "error"})


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Settings of one sidecar process (see the README's "Configuration")."""

    policy: Path
    listen: str = DEFAULT_LISTEN
    state_dir: Path = Path("hitl-state")
    audit_log: str = ""
    escalation_log: Path | None = None
    metrics_addr: str = ""
    log_level: str = "info"
    policy_poll_seconds: float = 1.0
    replay_ttl_seconds: float = 600.0
    replay_capacity: int = 100_000
    shutdown_grace_seconds: float = 10.0
    port_file: Path | None = None

    @property
    def audit_path(self) -> str:
        return self.audit_log or str(self.state_dir / "audit.jsonl")

    @property
    def escalation_path(self) -> Path:
        return self.escalation_log or self.state_dir / "escalations.jsonl"

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> SidecarConfig:
        """Settings from env (default: os.environ), with overrides (not None) on top."""
        env = os.environ if env is None else env
        given = {k: v for k, v in (overrides or {}).items() if v is not None}

        def text(name: str, var: str, default: str) -> str:
            return str(given.get(name, env.get(var, default)))

        policy = text("policy", ENV_POLICY, "")
        if not policy:
            raise ConfigError(f"{ENV_POLICY} (or --policy) is required: the policy file to serve")
        listen = text("listen", ENV_LISTEN, DEFAULT_LISTEN)
        _check_listen(listen)
        level = text("log_level", ENV_LOG_LEVEL, "info").lower()
        if level not in _LEVELS:
            raise ConfigError(f"{ENV_LOG_LEVEL} must be one of {sorted(_LEVELS)}, got {level!r}")
        metrics_addr = text("metrics_addr", ENV_METRICS_ADDR, "")
        if metrics_addr:
            split_host_port(metrics_addr, ENV_METRICS_ADDR)
        escalation_log = text("escalation_log", ENV_ESCALATION_LOG, "")
        port_file = text("port_file", ENV_PORT_FILE, "")
        return cls(
            policy=Path(policy),
            listen=listen,
            state_dir=Path(text("state_dir", ENV_STATE_DIR, "hitl-state")),
            audit_log=text("audit_log", ENV_AUDIT_LOG, ""),
            escalation_log=Path(escalation_log) if escalation_log else None,
            metrics_addr=metrics_addr,
            log_level=level,
            policy_poll_seconds=_positive(
                text("policy_poll_seconds", ENV_POLICY_POLL, "1"), ENV_POLICY_POLL
            ),
            replay_ttl_seconds=_positive(
                text("replay_ttl_seconds", ENV_REPLAY_TTL, "600"), ENV_REPLAY_TTL
            ),
            replay_capacity=int(
                _positive(
                    text("replay_capacity", ENV_REPLAY_CAPACITY, "100000"), ENV_REPLAY_CAPACITY
                )
            ),
            shutdown_grace_seconds=_positive(
                text("shutdown_grace_seconds", ENV_GRACE, "10"), ENV_GRACE
            ),
            port_file=Path(port_file) if port_file else None,
        )


def _positive(value: str, var: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{var} must be a number, got {value!r}") from None
    if not number > 0:
        raise ConfigError(f"{var} must be positive, got {value!r}")
    return number


def _check_listen(listen: str) -> None:
    if listen.startswith("unix:"):
        if len(listen) <= len("unix:"):
            raise ConfigError(f"{ENV_LISTEN}: unix: needs a socket path")
        return
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{ENV_LISTEN} must be HOST:PORT or unix:PATH, got {listen!r}")


def split_host_port(address: str, var: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{var} must be HOST:PORT, got {address!r}")
    return host, int(port)
