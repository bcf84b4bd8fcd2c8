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
ENV_SINK = "HITL_SINK"
ENV_DEPLOYMENT = "HITL_DEPLOYMENT"
ENV_SPOOL_FSYNC = "HITL_SPOOL_FSYNC"
ENV_SPOOL_BUDGET = "HITL_SPOOL_BUDGET_BYTES"
ENV_FORWARD_BATCH = "HITL_FORWARD_BATCH"
ENV_FORWARD_TIMEOUT = "HITL_FORWARD_TIMEOUT_SECONDS"
ENV_FORWARD_MAX_BACKOFF = "HITL_FORWARD_MAX_BACKOFF_SECONDS"
ENV_METRICS_ADDR = "HITL_METRICS_ADDR"
ENV_LOG_LEVEL = "HITL_LOG_LEVEL"
ENV_POLICY_POLL = "HITL_POLICY_POLL_SECONDS"
ENV_REPLAY_TTL = "HITL_REPLAY_TTL_SECONDS"
ENV_REPLAY_CAPACITY = "HITL_REPLAY_CAPACITY"
ENV_GRACE = "HITL_SHUTDOWN_GRACE_SECONDS"
ENV_PORT_FILE = "HITL_PORT_FILE"

DEFAULT_LISTEN = "127.0.0.1:7431"
_LEVELS = frozenset({"debug", "info", "warning", "error"})
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
SPOOL_DIR, DEAD_LETTER_DIR = "spool", "dead-letter"  # under the state directory


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Settings of one sidecar process (see the README's "Configuration")."""

    policy: Path
    listen: str = DEFAULT_LISTEN
    state_dir: Path = Path("hitl-state")
    audit_log: str = ""
    sink: str = ""
    deployment: str = "default"
    spool_fsync: bool = True
    spool_budget_bytes: int = 1024 * 1024 * 1024
    forward_batch: int = 256
    forward_timeout_seconds: float = 5.0
    forward_max_backoff_seconds: float = 30.0
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
    def spool_dir(self) -> Path:
        return self.state_dir / SPOOL_DIR

    @property
    def dead_letter_dir(self) -> Path:
        return self.state_dir / DEAD_LETTER_DIR

    @property
    def segment_bytes(self) -> int:
        return min(MAX_SEGMENT_BYTES, self.spool_budget_bytes // 4)

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
        sink = text("sink", ENV_SINK, "")
        if sink:
            from sidecar.escalation.sinks import SINK_SCHEMES

            if sink.partition("://")[0] not in SINK_SCHEMES or "://" not in sink:
                raise ConfigError(
                    f"{ENV_SINK} must be review://HOST:PORT or nats://HOST:PORT, got {sink!r}"
                )
        fsync = text("spool_fsync", ENV_SPOOL_FSYNC, "true").lower()
        if fsync not in _BOOLEANS:
            raise ConfigError(f"{ENV_SPOOL_FSYNC} must be true or false, got {fsync!r}")
        budget = _positive(
            text("spool_budget_bytes", ENV_SPOOL_BUDGET, "1073741824"), ENV_SPOOL_BUDGET
        )
        if budget < 4096:
            raise ConfigError(f"{ENV_SPOOL_BUDGET} must be at least 4096, got {budget:.0f}")
        batch = _positive(text("forward_batch", ENV_FORWARD_BATCH, "256"), ENV_FORWARD_BATCH)
        if batch > 1000:
            raise ConfigError(f"{ENV_FORWARD_BATCH} must be at most 1000, got {batch:.0f}")
        port_file = text("port_file", ENV_PORT_FILE, "")
        return cls(
            policy=Path(policy),
            listen=listen,
            state_dir=Path(text("state_dir", ENV_STATE_DIR, "hitl-state")),
            audit_log=text("audit_log", ENV_AUDIT_LOG, ""),
            sink=sink,
            deployment=text("deployment", ENV_DEPLOYMENT, "default") or "default",
            spool_fsync=_BOOLEANS[fsync],
            spool_budget_bytes=int(budget),
            forward_batch=int(batch),
            forward_timeout_seconds=_positive(
                text("forward_timeout_seconds", ENV_FORWARD_TIMEOUT, "5"), ENV_FORWARD_TIMEOUT
            ),
            forward_max_backoff_seconds=_positive(
                text("forward_max_backoff_seconds", ENV_FORWARD_MAX_BACKOFF, "30"),
                ENV_FORWARD_MAX_BACKOFF,
            ),
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
