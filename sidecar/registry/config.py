"""The registry's settings, each declared once (``sidecar.settings.setting``): one
frozen object, validated at start-up. Flags override the environment; a bad value
fails at start-up naming the variable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sidecar.settings import (
    ServerSettings,
    address,
    client_ca_setting,
    grace_setting,
    health_listen_setting,
    log_level_setting,
    metrics_setting,
    path,
    port_file_setting,
    setting,
    tls_cert_setting,
    tls_key_setting,
)
from sidecar.storage.url import check_db

ENV_REGISTRY_DB = "HITL_REGISTRY_DB"
ENV_REGISTRY_SIGNING_KEY = "HITL_REGISTRY_SIGNING_KEY"

DEFAULT_REGISTRY_LISTEN = "127.0.0.1:7433"
DEFAULT_REGISTRY_DB = "sqlite:hitl-registry/registry.db"


@dataclass(frozen=True, slots=True)
class RegistryConfig(ServerSettings):
    """Settings of one registry process (docs/configuration.md)."""

    signing_key: Path = setting(
        ENV_REGISTRY_SIGNING_KEY,
        help="the Ed25519 private key (PEM) that signs policies (hitl registry keygen makes one)",
        parse=path,
    )
    listen: str = setting(
        "HITL_REGISTRY_LISTEN", DEFAULT_REGISTRY_LISTEN, "HOST:PORT", parse=address
    )
    health_listen: str = health_listen_setting("HITL_REGISTRY_HEALTH_LISTEN")
    db: str = setting(
        ENV_REGISTRY_DB,
        DEFAULT_REGISTRY_DB,
        "sqlite:PATH or postgresql://... (pip install 'hitl-sidecar[postgres]')",
        parse=check_db,
    )
    metrics_addr: str = metrics_setting("HITL_REGISTRY_METRICS_ADDR")
    refresh_seconds: float = setting(
        "HITL_REGISTRY_REFRESH_SECONDS", 30.0, "how often the head is re-signed for watchers"
    )
    head_poll_seconds: float = setting(
        "HITL_REGISTRY_HEAD_POLL_SECONDS",
        1.0,
        "how often a replica looks for revisions made by another",
    )
    tls_cert: Path | None = tls_cert_setting("HITL_REGISTRY_TLS_CERT")
    tls_key: Path | None = tls_key_setting("HITL_REGISTRY_TLS_KEY")
    client_ca: Path | None = client_ca_setting("HITL_REGISTRY_CLIENT_CA")
    log_level: str = log_level_setting()
    shutdown_grace_seconds: float = grace_setting(5.0)
    port_file: Path | None = port_file_setting("HITL_REGISTRY_PORT_FILE")
