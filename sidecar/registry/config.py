"""The registry's settings: one frozen object, validated at start-up.

Every environment variable the registry reads is a constant here (the log level
and shutdown grace are the sidecar's, shared). Explicit arguments (the CLI's flags)
override the environment; a bad value fails at start-up naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.settings import ENV_GRACE, ENV_LOG_LEVEL, check_address, check_log_level, positive
from sidecar.storage.url import check_db

ENV_REGISTRY_LISTEN = "HITL_REGISTRY_LISTEN"
ENV_REGISTRY_DB = "HITL_REGISTRY_DB"
ENV_REGISTRY_SIGNING_KEY = "HITL_REGISTRY_SIGNING_KEY"
ENV_REGISTRY_METRICS_ADDR = "HITL_REGISTRY_METRICS_ADDR"
ENV_REGISTRY_REFRESH = "HITL_REGISTRY_REFRESH_SECONDS"
ENV_REGISTRY_HEAD_POLL = "HITL_REGISTRY_HEAD_POLL_SECONDS"
ENV_REGISTRY_TLS_CERT = "HITL_REGISTRY_TLS_CERT"
ENV_REGISTRY_TLS_KEY = "HITL_REGISTRY_TLS_KEY"
ENV_REGISTRY_CLIENT_CA = "HITL_REGISTRY_CLIENT_CA"
ENV_REGISTRY_PORT_FILE = "HITL_REGISTRY_PORT_FILE"

DEFAULT_REGISTRY_LISTEN = "127.0.0.1:7433"
DEFAULT_REGISTRY_DB = "sqlite:hitl-registry/registry.db"


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Settings of one registry process (docs/registry.md)."""

    signing_key: Path
    listen: str = DEFAULT_REGISTRY_LISTEN
    db: str = DEFAULT_REGISTRY_DB
    metrics_addr: str = ""
    refresh_seconds: float = 30.0
    head_poll_seconds: float = 1.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    log_level: str = "info"
    shutdown_grace_seconds: float = 5.0
    port_file: Path | None = None

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> RegistryConfig:
        """Settings from env (default: os.environ), with overrides (not None) on top."""
        env = os.environ if env is None else env
        given = {k: v for k, v in (overrides or {}).items() if v is not None}

        def text(name: str, var: str, default: str) -> str:
            return str(given.get(name, env.get(var, default)))

        def path(name: str, var: str) -> Path | None:
            value = text(name, var, "")
            return Path(value) if value else None

        signing_key = path("signing_key", ENV_REGISTRY_SIGNING_KEY)
        if signing_key is None:
            raise ConfigError(
                f"{ENV_REGISTRY_SIGNING_KEY} (or --signing-key) is required: the Ed25519 "
                "private key that signs policies (hitl registry keygen makes one)"
            )
        listen = text("listen", ENV_REGISTRY_LISTEN, DEFAULT_REGISTRY_LISTEN)
        check_address(listen, ENV_REGISTRY_LISTEN)
        metrics_addr = text("metrics_addr", ENV_REGISTRY_METRICS_ADDR, "")
        if metrics_addr:
            check_address(metrics_addr, ENV_REGISTRY_METRICS_ADDR)
        level = text("log_level", ENV_LOG_LEVEL, "info").lower()
        check_log_level(level)
        tls_cert = path("tls_cert", ENV_REGISTRY_TLS_CERT)
        tls_key = path("tls_key", ENV_REGISTRY_TLS_KEY)
        client_ca = path("client_ca", ENV_REGISTRY_CLIENT_CA)
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError(f"{ENV_REGISTRY_TLS_CERT} and {ENV_REGISTRY_TLS_KEY} go together")
        if client_ca is not None and tls_cert is None:
            raise ConfigError(f"{ENV_REGISTRY_CLIENT_CA} (mTLS) needs {ENV_REGISTRY_TLS_CERT}")
        return cls(
            signing_key=signing_key,
            listen=listen,
            db=check_db(text("db", ENV_REGISTRY_DB, DEFAULT_REGISTRY_DB), ENV_REGISTRY_DB),
            metrics_addr=metrics_addr,
            refresh_seconds=positive(
                text("refresh_seconds", ENV_REGISTRY_REFRESH, "30"), ENV_REGISTRY_REFRESH
            ),
            head_poll_seconds=positive(
                text("head_poll_seconds", ENV_REGISTRY_HEAD_POLL, "1"), ENV_REGISTRY_HEAD_POLL
            ),
            tls_cert=tls_cert,
            tls_key=tls_key,
            client_ca=client_ca,
            log_level=level,
            shutdown_grace_seconds=positive(
                text("shutdown_grace_seconds", ENV_GRACE, "5"), ENV_GRACE
            ),
            port_file=path("port_file", ENV_REGISTRY_PORT_FILE),
        )
