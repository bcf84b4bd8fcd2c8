"""The sidecar's settings: one frozen object, validated at start-up.

Every environment variable is a constant here. Explicit arguments (the CLI's flags)
override the environment; a bad value fails at start-up naming the variable.

The policy comes from exactly one place: a local file (HITL_POLICY) or the registry
(HITL_REGISTRY, with the public key its policies must be signed with). Files named
by the registry settings (token, key, certificates) are checked here, at start-up,
so a typo fails the process rather than its first connection.

The Router listens on a pod-local address (HITL_LISTEN). HITL_HEALTH_LISTEN adds a
second listener that serves only ``grpc.health.v1`` (and reflection): for probes
that must dial an address outside the pod, such as the kubelet's gRPC probes, which
dial the pod's IP. Its port must differ from the Router's and the metrics port."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.escalation.sinks import sink_addresses
from sidecar.policy.signing import load_verifier
from sidecar.settings import (
    DEAD_LETTER_DIR,
    ENV_GRACE,
    ENV_LOG_LEVEL,
    ENV_STATE_DIR,
    POLICY_DIR,
    SPOOL_DIR,
    check_address,
    check_log_level,
    positive,
    split_host_port,
)

ENV_LISTEN = "HITL_LISTEN"
ENV_HEALTH_LISTEN = "HITL_HEALTH_LISTEN"
ENV_POLICY = "HITL_POLICY"
ENV_AUDIT_LOG = "HITL_AUDIT_LOG"
ENV_SINK = "HITL_SINK"
ENV_DEPLOYMENT = "HITL_DEPLOYMENT"
ENV_SPOOL_FSYNC = "HITL_SPOOL_FSYNC"
ENV_SPOOL_BUDGET = "HITL_SPOOL_BUDGET_BYTES"
ENV_FORWARD_BATCH = "HITL_FORWARD_BATCH"
ENV_FORWARD_TIMEOUT = "HITL_FORWARD_TIMEOUT_SECONDS"
ENV_FORWARD_MAX_BACKOFF = "HITL_FORWARD_MAX_BACKOFF_SECONDS"
ENV_METRICS_ADDR = "HITL_METRICS_ADDR"
ENV_POLICY_POLL = "HITL_POLICY_POLL_SECONDS"
ENV_REPLAY_TTL = "HITL_REPLAY_TTL_SECONDS"
ENV_REPLAY_CAPACITY = "HITL_REPLAY_CAPACITY"
ENV_PORT_FILE = "HITL_PORT_FILE"
ENV_REGISTRY = "HITL_REGISTRY"
ENV_REGISTRY_TOKEN_FILE = "HITL_REGISTRY_TOKEN_FILE"  # noqa: S105 (a variable's name, no secret)
ENV_REGISTRY_PUBLIC_KEY = "HITL_REGISTRY_PUBLIC_KEY"
ENV_REGISTRY_CA = "HITL_REGISTRY_CA"
ENV_REGISTRY_CERT = "HITL_REGISTRY_CERT"
ENV_REGISTRY_KEY = "HITL_REGISTRY_KEY"
ENV_REGISTRY_POLL = "HITL_REGISTRY_POLL_SECONDS"

DEFAULT_LISTEN = "127.0.0.1:7431"
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
MAX_SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    """Settings of one sidecar process (docs/running.md, "Configuration")."""

    policy: Path | None = None
    listen: str = DEFAULT_LISTEN
    health_listen: str = ""  # off: health is served on the Router's address only
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
    registry: str = ""
    registry_token: str = field(default="", repr=False)
    registry_public_key: Path | None = None
    registry_ca: Path | None = None
    registry_cert: Path | None = None
    registry_key: Path | None = None
    registry_poll_seconds: float = 10.0

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
    def policy_state_dir(self) -> Path:
        """Where the last-known-good policy from the registry is kept."""
        return self.state_dir / POLICY_DIR

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
        registry = text("registry", ENV_REGISTRY, "")
        if bool(policy) == bool(registry):
            raise ConfigError(
                f"exactly one of {ENV_POLICY} (or --policy: a policy file) and {ENV_REGISTRY}"
                " (or --registry: HOST:PORT of the registry) is required"
                + (", not both" if policy else "")
            )
        remote = _registry_settings(given, env, registry) if registry else {}
        listen = text("listen", ENV_LISTEN, DEFAULT_LISTEN)
        _check_listen(listen)
        level = text("log_level", ENV_LOG_LEVEL, "info").lower()
        check_log_level(level)
        metrics_addr = text("metrics_addr", ENV_METRICS_ADDR, "")
        if metrics_addr:
            check_address(metrics_addr, ENV_METRICS_ADDR)
        health_listen = text("health_listen", ENV_HEALTH_LISTEN, "")
        if health_listen:
            _check_health_listen(health_listen, listen, metrics_addr)
        sink = text("sink", ENV_SINK, "")
        if sink:
            _check_sink(sink)
        fsync = text("spool_fsync", ENV_SPOOL_FSYNC, "true").lower()
        if fsync not in _BOOLEANS:
            raise ConfigError(f"{ENV_SPOOL_FSYNC} must be true or false, got {fsync!r}")
        budget = positive(
            text("spool_budget_bytes", ENV_SPOOL_BUDGET, "1073741824"), ENV_SPOOL_BUDGET
        )
        if budget < 4096:
            raise ConfigError(f"{ENV_SPOOL_BUDGET} must be at least 4096, got {budget:.0f}")
        batch = positive(text("forward_batch", ENV_FORWARD_BATCH, "256"), ENV_FORWARD_BATCH)
        if batch > 1000:
            raise ConfigError(f"{ENV_FORWARD_BATCH} must be at most 1000, got {batch:.0f}")
        port_file = text("port_file", ENV_PORT_FILE, "")
        return cls(
            policy=Path(policy) if policy else None,
            listen=listen,
            health_listen=health_listen,
            state_dir=Path(text("state_dir", ENV_STATE_DIR, "hitl-state")),
            audit_log=text("audit_log", ENV_AUDIT_LOG, ""),
            sink=sink,
            deployment=text("deployment", ENV_DEPLOYMENT, "default") or "default",
            spool_fsync=_BOOLEANS[fsync],
            spool_budget_bytes=int(budget),
            forward_batch=int(batch),
            forward_timeout_seconds=positive(
                text("forward_timeout_seconds", ENV_FORWARD_TIMEOUT, "5"), ENV_FORWARD_TIMEOUT
            ),
            forward_max_backoff_seconds=positive(
                text("forward_max_backoff_seconds", ENV_FORWARD_MAX_BACKOFF, "30"),
                ENV_FORWARD_MAX_BACKOFF,
            ),
            metrics_addr=metrics_addr,
            log_level=level,
            policy_poll_seconds=positive(
                text("policy_poll_seconds", ENV_POLICY_POLL, "1"), ENV_POLICY_POLL
            ),
            replay_ttl_seconds=positive(
                text("replay_ttl_seconds", ENV_REPLAY_TTL, "600"), ENV_REPLAY_TTL
            ),
            replay_capacity=int(
                positive(
                    text("replay_capacity", ENV_REPLAY_CAPACITY, "100000"), ENV_REPLAY_CAPACITY
                )
            ),
            shutdown_grace_seconds=positive(
                text("shutdown_grace_seconds", ENV_GRACE, "10"), ENV_GRACE
            ),
            port_file=Path(port_file) if port_file else None,
            **remote,
        )


def _registry_settings(
    given: Mapping[str, object], env: Mapping[str, str], registry: str
) -> dict[str, Any]:
    """The registry's settings, each file checked now (see the module docstring)."""
    split_host_port(registry, ENV_REGISTRY)

    def path(name: str, var: str) -> Path | None:
        value = str(given.get(name, env.get(var, "")))
        if not value:
            return None
        if not os.access(value, os.R_OK) or not os.path.isfile(value):
            raise ConfigError(f"{var}: {value} is not a readable file")
        return Path(value)

    public_key = path("registry_public_key", ENV_REGISTRY_PUBLIC_KEY)
    if public_key is None:
        raise ConfigError(
            f"{ENV_REGISTRY_PUBLIC_KEY} (or --registry-public-key) is required with"
            f" {ENV_REGISTRY}: the PEM public key the registry signs policies with"
        )

    try:
        load_verifier(public_key)
    except ConfigError as exc:
        raise ConfigError(f"{ENV_REGISTRY_PUBLIC_KEY}: {exc}") from exc
    token = ""
    token_file = path("registry_token_file", ENV_REGISTRY_TOKEN_FILE)
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{ENV_REGISTRY_TOKEN_FILE}: cannot read {token_file}: {exc}"
            ) from exc
        if not token:
            raise ConfigError(f"{ENV_REGISTRY_TOKEN_FILE}: {token_file} is empty")
    ca = path("registry_ca", ENV_REGISTRY_CA)
    cert = path("registry_cert", ENV_REGISTRY_CERT)
    key = path("registry_key", ENV_REGISTRY_KEY)
    if (cert is None) != (key is None):
        raise ConfigError(
            f"{ENV_REGISTRY_CERT} and {ENV_REGISTRY_KEY} go together: the client"
            " certificate and its private key"
        )
    if cert is not None and ca is None:
        raise ConfigError(
            f"{ENV_REGISTRY_CERT} needs {ENV_REGISTRY_CA}: a client certificate is only"
            " presented over TLS, which the CA turns on"
        )
    poll = str(given.get("registry_poll_seconds", env.get(ENV_REGISTRY_POLL, "10")))
    return {
        "registry": registry,
        "registry_token": token,
        "registry_public_key": public_key,
        "registry_ca": ca,
        "registry_cert": cert,
        "registry_key": key,
        "registry_poll_seconds": positive(poll, ENV_REGISTRY_POLL),
    }


def _check_listen(listen: str) -> None:
    if listen.startswith("unix:"):
        if len(listen) <= len("unix:"):
            raise ConfigError(f"{ENV_LISTEN}: unix: needs a socket path")
        return
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{ENV_LISTEN} must be HOST:PORT or unix:PATH, got {listen!r}")


def _check_health_listen(health: str, listen: str, metrics_addr: str) -> None:
    """HOST:PORT on a port of its own: gRPC binds with SO_REUSEPORT, so a port shared
    with the Router would not fail to bind, it would split the Router's connections."""
    _, port = split_host_port(health, ENV_HEALTH_LISTEN)
    if port == 0:
        return
    for var, other in ((ENV_LISTEN, listen), (ENV_METRICS_ADDR, metrics_addr)):
        other_port = other.rpartition(":")[2]
        if not other.startswith("unix:") and other_port.isdigit() and int(other_port) == port:
            raise ConfigError(
                f"{ENV_HEALTH_LISTEN} ({health}) must use another port than {var} ({other})"
            )


def _check_sink(sink: str) -> None:
    try:
        _, addresses = sink_addresses(sink)
    except ValueError as exc:
        raise ConfigError(f"{ENV_SINK} {exc}") from None
    for address in addresses:
        check_address(address, ENV_SINK)
