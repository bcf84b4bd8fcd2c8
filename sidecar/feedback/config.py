"""The feedback service's settings: each declared once (``sidecar.settings.setting``)
and checked when the process starts, a bad value named by its variable."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.escalation.sinks import NatsAccess
from sidecar.escalation.sinks.base import NATS_SCHEMES
from sidecar.escalation.sinks.nats_access import (
    check_nats_settings,
    nats_access_of,
    nats_ca_setting,
    nats_creds_setting,
    nats_token_setting,
)
from sidecar.feedback.ingest import DEFAULT_JOIN_WINDOW, DEFAULT_MONITOR_WINDOW
from sidecar.settings import (
    ServerSettings,
    address,
    client_ca_setting,
    count,
    duration,
    grace_setting,
    health_listen_setting,
    log_level_setting,
    metrics_setting,
    non_negative,
    optional_address,
    path,
    port_file_setting,
    readable_file,
    setting,
    tls_cert_setting,
    tls_key_setting,
)
from sidecar.storage.url import check_db

DEFAULT_FEEDBACK_LISTEN = "127.0.0.1:7435"


def _optional_duration(value: str, var: str) -> float:
    return 0.0 if value in ("", "0") else duration(value, var)


def _url(value: str, var: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{var} must be an http:// or https:// URL, got {value!r}")
    return value


def _nats(value: str, var: str) -> str:
    if not value:
        return ""
    parts = [url.partition("://") for url in value.split(",")]
    if not all(scheme in NATS_SCHEMES and rest for scheme, _, rest in parts):
        raise ConfigError(
            f"{var} must be nats://HOST:PORT[,nats://HOST:PORT...] (tls:// for TLS), got {value!r}"
        )
    for _, _, rest in parts:
        address(rest, var)
    if importlib.util.find_spec("nats") is None:
        raise ConfigError(f"{var}: JetStream needs nats-py: pip install 'hitl-sidecar[nats]'")
    return value


def _http_listen(value: str, var: str) -> str:
    listen = optional_address(value, var)
    if listen and not all(importlib.util.find_spec(m) for m in ("connectrpc", "uvicorn")):
        raise ConfigError(f"{var}: HTTP needs the web extra: pip install 'hitl-sidecar[web]'")
    return listen


@dataclass(frozen=True, slots=True)
class FeedbackConfig(ServerSettings):
    """Settings of one feedback service process (docs/configuration.md)."""

    listen: str = setting(
        "HITL_FEEDBACK_LISTEN",
        DEFAULT_FEEDBACK_LISTEN,
        "HOST:PORT; port 0 picks a free one",
        parse=address,
    )
    health_listen: str = health_listen_setting("HITL_FEEDBACK_HEALTH_LISTEN")
    db: str = setting(
        "HITL_FEEDBACK_DB",
        "sqlite:hitl-state/feedback.db",
        "sqlite:PATH (or a bare path) or postgresql://...",
        parse=check_db,
    )
    http_listen: str = setting(
        "HITL_FEEDBACK_HTTP_LISTEN",
        "",
        "HOST:PORT of the same service over HTTP (Connect: POST JSON to"
        " /hitl.v1.Feedback/<Method>), TLS with tls-cert when set; needs the web extra",
        parse=_http_listen,
    )
    nats: str = setting(
        "HITL_FEEDBACK_NATS",
        "",
        "nats://HOST:PORT[,...]: also take decisions and outcomes from the JetStream streams"
        " of the sidecars that send there (HITL_FEEDBACK=nats://...); tls://HOST:PORT for"
        " TLS (see HITL_FEEDBACK_NATS_CA); needs the nats extra",
        parse=_nats,
    )
    # Declared alike by every process reaching NATS (nats_access).
    nats_ca: Path | None = nats_ca_setting("HITL_FEEDBACK_NATS_CA")
    nats_creds_file: Path | None = nats_creds_setting("HITL_FEEDBACK_NATS_CREDS_FILE")
    nats_token_file: Path | None = nats_token_setting("HITL_FEEDBACK_NATS_TOKEN_FILE")
    nats_deployments: str = setting(
        "HITL_FEEDBACK_NATS_DEPLOYMENTS",
        "default",
        "comma-separated HITL_DEPLOYMENT names whose streams (HITL_<NAME>_FEEDBACK) are taken",
    )
    trigger_rows: int = setting(
        "HITL_FEEDBACK_TRIGGER_ROWS",
        0,
        "newly labelled decisions of a model that trigger a model update (a dataset"
        " snapshot, announced); 0: volume never does",
        parse=count(low=0),
    )
    trigger_age: float = setting(
        "HITL_FEEDBACK_TRIGGER_AGE",
        0.0,
        "how old the oldest new label may grow before it triggers a model update; seconds,"
        " or with s, m, h or d; 0: age never does",
        parse=_optional_duration,
    )
    trigger_webhook: str = setting(
        "HITL_FEEDBACK_TRIGGER_WEBHOOK",
        "",
        "an http(s) URL each model update is POSTed to as JSON (besides NATS with"
        " HITL_FEEDBACK_NATS)",
        parse=_url,
    )
    trigger_webhook_key_file: Path | None = setting(
        "HITL_FEEDBACK_TRIGGER_WEBHOOK_KEY_FILE",
        None,
        "a secret the webhook's body is signed with (X-Hitl-Signature: sha256=HMAC)",
        parse=readable_file,
    )
    datasets: Path = setting(
        "HITL_FEEDBACK_DATASETS",
        Path("hitl-state/datasets"),
        "where model updates write their dataset snapshots",
        parse=path,
    )
    join_window: float = setting(
        "HITL_FEEDBACK_JOIN_WINDOW",
        DEFAULT_JOIN_WINDOW,
        "how long an event waits for its request's decision before it is dead-lettered;"
        " seconds, or a number with s, m, h or d",
        parse=duration,
        shown="7d",
    )
    monitor_window: float = setting(
        "HITL_FEEDBACK_MONITOR_WINDOW",
        DEFAULT_MONITOR_WINDOW,
        "the decisions the loop's health (coverage, override rate, label delay) is read"
        " over: those decided this long ago or since; seconds, or with s, m, h or d",
        parse=duration,
        shown="1d",
    )
    sweep_seconds: float = setting(
        "HITL_FEEDBACK_SWEEP_SECONDS",
        60.0,
        "how often events past the join window are swept, and the loop's health read",
    )
    rate_limit: float = setting(
        "HITL_FEEDBACK_RATE_LIMIT",
        5000.0,
        "events (and decisions) per second one principal may send, in bursts of twice"
        " that (at least a full batch); 0 for no limit",
        parse=non_negative,
    )
    metrics_addr: str = metrics_setting("HITL_FEEDBACK_METRICS_ADDR")
    log_level: str = log_level_setting()
    workers: int = setting("HITL_FEEDBACK_WORKERS", 16, "gRPC worker threads")
    tls_cert: Path | None = tls_cert_setting("HITL_FEEDBACK_TLS_CERT")
    tls_key: Path | None = tls_key_setting("HITL_FEEDBACK_TLS_KEY")
    client_ca: Path | None = client_ca_setting("HITL_FEEDBACK_CLIENT_CA")
    shutdown_grace_seconds: float = grace_setting(10.0)
    port_file: Path | None = port_file_setting("HITL_FEEDBACK_PORT_FILE")

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        """The TLS rules, and the NATS credentials as the sidecar's are checked."""
        # super() names the class: slots=True makes a new one, which the argumentless
        # form does not know.
        super(FeedbackConfig, cls).check(values)
        check_nats_settings(cls, values, ("nats",))

    def nats_access(self) -> NatsAccess:
        """How the JetStream consumer reaches the servers: the CA's contents, the
        credentials files (read again at each connection)."""
        return nats_access_of(self)
