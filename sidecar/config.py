"""The sidecar's settings, each declared once (``sidecar.settings.setting``): one
frozen object, validated at start-up. Flags override the environment; a bad value
fails at start-up naming the variable. docs/configuration.md is generated from the
declarations.

The policy comes from exactly one place: a local file (HITL_POLICY) or the registry
(HITL_REGISTRY, with the public key its policies must be signed with). Files named
by the registry settings (token, key, certificates) are checked here, at start-up,
so a typo fails the process rather than its first connection.

The Router listens on a pod-local address (HITL_LISTEN). HITL_HEALTH_LISTEN adds a
second listener that serves only ``grpc.health.v1`` (and reflection): for probes
that must dial an address outside the pod, such as the kubelet's gRPC probes, which
dial the pod's IP. Its port must differ from the Router's and the metrics port."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.escalation.decisions import DEFAULT_SAMPLE
from sidecar.escalation.sinks import NatsAccess, sink_addresses
from sidecar.escalation.sinks.labelstudio_settings import LabelStudioSinkConfig, base_url
from sidecar.escalation.sinks.nats_access import (
    check_nats_settings,
    nats_access_of,
    nats_ca_setting,
    nats_creds_setting,
    nats_token_setting,
)
from sidecar.policy.signing import load_verifier
from sidecar.settings import (
    DEAD_LETTER_DIR,
    DECISIONS_DEAD_LETTER_DIR,
    DECISIONS_DIR,
    ENV_STATE_DIR,
    POLICY_DIR,
    SPOOL_DIR,
    ClientCredentials,
    Settings,
    address,
    check_health_listen,
    client_cert_setting,
    client_key_setting,
    count,
    fraction,
    grace_setting,
    log_level_setting,
    metrics_setting,
    optional_address,
    optional_path,
    port_file_setting,
    read_file,
    read_token,
    readable_file,
    service_ca_setting,
    setting,
    token_file_setting,
)

ENV_LISTEN = "HITL_LISTEN"
ENV_HEALTH_LISTEN = "HITL_HEALTH_LISTEN"
ENV_POLICY = "HITL_POLICY"
ENV_METRICS_ADDR = "HITL_METRICS_ADDR"
ENV_REPLAY_TTL = "HITL_REPLAY_TTL_SECONDS"
ENV_SINK = "HITL_SINK"
ENV_REGISTRY = "HITL_REGISTRY"
ENV_REGISTRY_TOKEN_FILE = "HITL_REGISTRY_TOKEN_FILE"  # noqa: S105 (a variable's name, no secret)
ENV_REGISTRY_PUBLIC_KEY = "HITL_REGISTRY_PUBLIC_KEY"
ENV_REGISTRY_CA = "HITL_REGISTRY_CA"
ENV_REGISTRY_CERT = "HITL_REGISTRY_CERT"
ENV_REGISTRY_KEY = "HITL_REGISTRY_KEY"
ENV_REGISTRY_POLL = "HITL_REGISTRY_POLL_SECONDS"

DEFAULT_LISTEN = "127.0.0.1:7431"
MAX_SEGMENT_BYTES = 64 * 1024 * 1024


def _listen(value: str, var: str) -> str:
    if value.startswith("unix:"):
        if len(value) <= len("unix:"):
            raise ConfigError(f"{var}: unix: needs a socket path")
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{var} must be HOST:PORT or unix:PATH, got {value!r}")
    return value


def _sink(value: str, var: str) -> str:
    if not value:
        return ""
    if value.startswith(("labelstudio://", "labelstudios://")):
        return _labelstudio_sink(value, var)
    try:
        scheme, addresses = sink_addresses(value)
    except ValueError as exc:
        raise ConfigError(f"{var} {exc}") from None
    for each in addresses:
        address(each, var)
    if scheme == "nats" and importlib.util.find_spec("nats") is None:
        raise ConfigError(f"{var}: a NATS sink needs nats-py: pip install 'hitl-sidecar[nats]'")
    return value


def _labelstudio_sink(value: str, var: str) -> str:
    """A Label Studio URL whose settings (the token file, the projects) load and whose
    SDK is installed."""
    base_url(value, var)
    LabelStudioSinkConfig.load()
    if importlib.util.find_spec("label_studio_sdk") is None:
        raise ConfigError(
            f"{var}: a Label Studio sink needs label-studio-sdk:"
            " pip install 'hitl-sidecar[labelstudio]'"
        )
    return value


def _feedback(value: str, var: str) -> str:
    """The feedback service's HOST:PORT, or NATS servers (nats:// or tls://HOST:PORT[,...]) whose
    JetStream it consumes."""
    if value.startswith(("nats://", "tls://")):
        return _sink(value, var)
    return optional_address(value, var)


@dataclass(frozen=True, slots=True)
class SidecarConfig(Settings):
    """Settings of one sidecar process (docs/configuration.md)."""

    policy: Path | None = setting(
        ENV_POLICY,
        None,
        "policy file, YAML or JSON; exactly one of this and HITL_REGISTRY",
        parse=optional_path,
        shown="one of the two",
    )
    registry: str = setting(
        ENV_REGISTRY,
        "",
        "take the policy from the registry at HOST:PORT instead of a file",
        parse=optional_address,
        shown="one of the two",
    )
    listen: str = setting(
        ENV_LISTEN, DEFAULT_LISTEN, "HOST:PORT (port 0 picks one) or unix:PATH", parse=_listen
    )
    health_listen: str = setting(
        ENV_HEALTH_LISTEN,
        "",
        "HOST:PORT of a listener serving only gRPC health and reflection, for probes from"
        " outside the pod; its port must differ from the Router's and the metrics port",
        parse=optional_address,
    )
    state_dir: Path = setting(
        ENV_STATE_DIR,
        Path("hitl-state"),
        "the audit log, the escalation spool (spool/) and dead letters (dead-letter/);"
        " a local volume that outlives the container",
        parse=lambda value, var: Path(value or "hitl-state"),
    )
    audit_log: str = setting(
        "HITL_AUDIT_LOG", "", "audit log path, - for stdout", shown="$HITL_STATE_DIR/audit.jsonl"
    )
    sink: str = setting(
        ENV_SINK,
        "",
        "where the forwarder delivers: review://HOST:PORT or nats://HOST:PORT[,nats://...]"
        " (tls://HOST:PORT: NATS over TLS, see HITL_NATS_CA) or labelstudio://HOST:PORT"
        " (docs/labelstudio.md); without one escalations stay in the spool",
        parse=_sink,
    )
    deployment: str = setting(
        "HITL_DEPLOYMENT",
        "default",
        "names the NATS stream (HITL_<DEPLOYMENT>) and subjects",
        parse=lambda value, var: value or "default",
    )
    # Declared alike by every process reaching NATS (nats_access).
    nats_ca: Path | None = nats_ca_setting("HITL_NATS_CA")
    nats_creds_file: Path | None = nats_creds_setting("HITL_NATS_CREDS_FILE")
    nats_token_file: Path | None = nats_token_setting("HITL_NATS_TOKEN_FILE")
    spool_fsync: bool = setting(
        "HITL_SPOOL_FSYNC",
        True,
        "false relaxes the no-loss guarantee to a killed process (see guarantees.md)",
    )
    spool_budget_bytes: int = setting(
        "HITL_SPOOL_BUDGET_BYTES",
        1024 * 1024 * 1024,
        "disk the spool may use (at least 4096); when full, escalations are refused",
        parse=count(low=4096),
    )
    forward_batch: int = setting(
        "HITL_FORWARD_BATCH", 256, "escalations per delivery (at most 1000)", parse=count(1, 1000)
    )
    forward_timeout_seconds: float = setting(
        "HITL_FORWARD_TIMEOUT_SECONDS", 5.0, "a delivery taking longer counts as failed"
    )
    forward_max_backoff_seconds: float = setting(
        "HITL_FORWARD_MAX_BACKOFF_SECONDS",
        30.0,
        "longest wait between retries; an open circuit waits a third of it",
    )
    metrics_addr: str = metrics_setting(ENV_METRICS_ADDR)
    log_level: str = log_level_setting()
    policy_poll_seconds: float = setting(
        "HITL_POLICY_POLL_SECONDS", 1.0, "how often the policy file is checked for changes"
    )
    replay_ttl_seconds: float = setting(ENV_REPLAY_TTL, 600.0, "replay window age, seconds")
    replay_capacity: int = setting("HITL_REPLAY_CAPACITY", 100_000, "replay window size")
    shutdown_grace_seconds: float = grace_setting(10.0)
    port_file: Path | None = port_file_setting("HITL_PORT_FILE")
    registry_token_file: Path | None = setting(
        ENV_REGISTRY_TOKEN_FILE,
        None,
        "file holding the sidecar's registry bearer token",
        parse=readable_file,
    )
    registry_public_key: Path | None = setting(
        ENV_REGISTRY_PUBLIC_KEY,
        None,
        "the PEM public key the registry signs policies with; required with HITL_REGISTRY",
        parse=readable_file,
    )
    registry_ca: Path | None = setting(
        ENV_REGISTRY_CA,
        None,
        "CA certificate of the registry's TLS certificate (turns TLS on)",
        parse=readable_file,
    )
    registry_cert: Path | None = setting(
        ENV_REGISTRY_CERT, None, "client certificate for mTLS to the registry", parse=readable_file
    )
    registry_key: Path | None = setting(
        ENV_REGISTRY_KEY, None, "the client certificate's private key", parse=readable_file
    )
    registry_poll_seconds: float = setting(
        ENV_REGISTRY_POLL, 10.0, "poll interval while the registry's Watch stream is down"
    )
    review_token_file: Path | None = token_file_setting("HITL_REVIEW", "a review:// sink")
    review_ca: Path | None = service_ca_setting("HITL_REVIEW", "the review queue")
    review_cert: Path | None = client_cert_setting("HITL_REVIEW", "the review queue")
    review_key: Path | None = client_key_setting("HITL_REVIEW")
    feedback: str = setting(
        "HITL_FEEDBACK",
        "",
        "the feedback service's HOST:PORT, or nats://HOST:PORT[,...] to send through"
        " JetStream: escalated decisions, a sample of automated ones and RecordOutcome's"
        " outcomes go there",
        parse=_feedback,
    )
    decision_sample: float = setting(
        "HITL_DECISION_SAMPLE",
        DEFAULT_SAMPLE,
        "share of automated decisions recorded for the feedback service (0 to 1)",
        parse=fraction,
    )
    decision_spool_budget_bytes: int = setting(
        "HITL_DECISION_SPOOL_BUDGET_BYTES",
        256 * 1024 * 1024,
        "disk the decisions spool may use (at least 4096); when full, decision records are"
        " counted and not kept, outcomes refused",
        parse=count(low=4096),
    )
    feedback_token_file: Path | None = token_file_setting("HITL_FEEDBACK", "the feedback service")
    feedback_ca: Path | None = service_ca_setting("HITL_FEEDBACK", "the feedback service")
    feedback_cert: Path | None = client_cert_setting("HITL_FEEDBACK", "the feedback service")
    feedback_key: Path | None = client_key_setting("HITL_FEEDBACK")
    audit_key_file: Path | None = setting(
        "HITL_AUDIT_KEY_FILE",
        None,
        "file holding the deployment's secret (at least 16 bytes) that keys the audit"
        " sample, so serving code cannot predict which requests are audited",
        parse=readable_file,
    )
    # Read from the files above at start-up.
    registry_token: str = field(default="", repr=False)
    review_token: str = field(default="", repr=False)
    feedback_token: str = field(default="", repr=False)
    audit_key: bytes = field(default=b"", repr=False)

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
    def decision_spool_dir(self) -> Path:
        """Decision records and outcomes waiting for the feedback service."""
        return self.state_dir / DECISIONS_DIR

    @property
    def decision_dead_letter_dir(self) -> Path:
        return self.state_dir / DECISIONS_DEAD_LETTER_DIR

    @property
    def policy_state_dir(self) -> Path:
        """Where the last-known-good policy from the registry is kept."""
        return self.state_dir / POLICY_DIR

    @property
    def segment_bytes(self) -> int:
        return segment_for(self.spool_budget_bytes)

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        """The rules across settings; the token and key files read into their values."""
        if bool(values["policy"]) == bool(values["registry"]):
            raise ConfigError(
                f"exactly one of {ENV_POLICY} (or --policy: a policy file) and {ENV_REGISTRY}"
                " (or --registry: HOST:PORT of the registry) is required"
                + (", not both" if values["policy"] else "")
            )
        check_health_listen(cls, values)
        if values["registry"]:
            values["registry_token"] = _registry_token(values)
        for service in ("review", "feedback"):
            prefix = f"HITL_{service.upper()}"
            if (token_file := values[f"{service}_token_file"]) is not None:
                values[f"{service}_token"] = read_token(token_file, f"{prefix}_TOKEN_FILE")
            _check_pair(values, service, prefix)
        check_nats_settings(cls, values, ("sink", "feedback"))
        if (audit_key_file := values["audit_key_file"]) is not None:
            values["audit_key"] = _audit_key(audit_key_file)

    def nats_access(self) -> NatsAccess:
        """How the NATS sinks reach their servers: the CA's contents, the
        credentials files (read again at each connection)."""
        return nats_access_of(self)

    def credentials(self, service: str) -> ClientCredentials:
        """What the sidecar presents to a service it calls (``review``, ``feedback``):
        the token, and the TLS files' contents."""
        files = (getattr(self, f"{service}_{part}") for part in ("ca", "cert", "key"))
        return ClientCredentials(getattr(self, f"{service}_token"), *map(read_file, files))


def _registry_token(values: Mapping[str, Any]) -> str:
    """Check the registry's settings together (each file was checked when read) and
    read the bearer token, if any."""
    public_key: Path | None = values["registry_public_key"]
    if public_key is None:
        raise ConfigError(
            f"{ENV_REGISTRY_PUBLIC_KEY} (or --registry-public-key) is required with"
            f" {ENV_REGISTRY}: the PEM public key the registry signs policies with"
        )
    try:
        load_verifier(public_key)
    except ConfigError as exc:
        raise ConfigError(f"{ENV_REGISTRY_PUBLIC_KEY}: {exc}") from exc
    _check_pair(values, "registry", "HITL_REGISTRY")
    token_file: Path | None = values["registry_token_file"]
    return "" if token_file is None else read_token(token_file, ENV_REGISTRY_TOKEN_FILE)


def _check_pair(values: Mapping[str, Any], service: str, prefix: str) -> None:
    """A client certificate and its key go together, and only over TLS."""
    cert, key = values[f"{service}_cert"], values[f"{service}_key"]
    if (cert is None) != (key is None):
        raise ConfigError(
            f"{prefix}_CERT and {prefix}_KEY go together: the client certificate and its"
            " private key"
        )
    if cert is not None and values[f"{service}_ca"] is None:
        raise ConfigError(
            f"{prefix}_CERT needs {prefix}_CA: a client certificate is only presented over"
            " TLS, which the CA turns on"
        )


def _audit_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"HITL_AUDIT_KEY_FILE: cannot read {path}: {exc.strerror}") from exc
    if len(key) < 16:
        raise ConfigError(f"HITL_AUDIT_KEY_FILE: {path} holds {len(key)} bytes; at least 16")
    return key


def segment_for(budget_bytes: int) -> int:
    """A spool's segment size: a quarter of its budget, at most MAX_SEGMENT_BYTES."""
    return min(MAX_SEGMENT_BYTES, budget_bytes // 4)
