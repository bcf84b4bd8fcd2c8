"""The review queue's settings, each declared once (``sidecar.settings.setting``):
one frozen object, validated at start-up. Flags override the environment; a bad
value fails at start-up naming the variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sidecar.review.sla import Sla, parse_sla
from sidecar.review.validation import DEFAULT_MAX_CLAIMS, DEFAULT_MAX_LEASE_SECONDS
from sidecar.settings import (
    address,
    client_ca_setting,
    client_cert_setting,
    client_key_setting,
    grace_setting,
    load_server,
    log_level_setting,
    metrics_setting,
    optional_address,
    port_file_setting,
    service_ca_setting,
    setting,
    tls_cert_setting,
    tls_key_setting,
    token_file_setting,
)
from sidecar.storage.url import check_db

DEFAULT_REVIEW_LISTEN = "127.0.0.1:7432"
DEFAULT_REVIEW_DB = "sqlite:hitl-state/review.db"


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    """Settings of one review queue process (docs/configuration.md)."""

    listen: str = setting(
        "HITL_REVIEW_LISTEN",
        DEFAULT_REVIEW_LISTEN,
        "HOST:PORT; port 0 picks a free one",
        parse=address,
    )
    db: str = setting(
        "HITL_REVIEW_DB",
        DEFAULT_REVIEW_DB,
        "sqlite:PATH (or a bare path) or postgresql://...",
        parse=check_db,
    )
    sla: Sla = setting(
        "HITL_REVIEW_SLA",
        Sla(),
        "deadline per tier, e.g. HUMAN_PRIMARY=15m; seconds or 15m, 2h, 1d;"
        " unnamed tiers keep their default",
        parse=parse_sla,
        unset="",
        shown=Sla().describe(),
    )
    sweep_seconds: float = setting(
        "HITL_REVIEW_SWEEP_SECONDS", 10.0, "how often overdue items are raised"
    )
    metrics_addr: str = metrics_setting("HITL_REVIEW_METRICS_ADDR")
    log_level: str = log_level_setting()
    workers: int = setting("HITL_REVIEW_WORKERS", 16, "gRPC worker threads")
    max_claims: int = setting(
        "HITL_REVIEW_MAX_CLAIMS", DEFAULT_MAX_CLAIMS, "items one reviewer may hold at once"
    )
    max_lease_seconds: float = setting(
        "HITL_REVIEW_MAX_LEASE_SECONDS",
        DEFAULT_MAX_LEASE_SECONDS,
        "the longest lease a claim may ask for, seconds",
    )
    tls_cert: Path | None = tls_cert_setting("HITL_REVIEW_TLS_CERT")
    tls_key: Path | None = tls_key_setting("HITL_REVIEW_TLS_KEY")
    client_ca: Path | None = client_ca_setting("HITL_REVIEW_CLIENT_CA")
    feedback: str = setting(
        "HITL_REVIEW_FEEDBACK",
        "",
        "the feedback service's HOST:PORT: every resolution is sent there as a REVIEW event",
        parse=optional_address,
    )
    feedback_token_file: Path | None = token_file_setting(
        "HITL_REVIEW_FEEDBACK", "the feedback service"
    )
    feedback_ca: Path | None = service_ca_setting("HITL_REVIEW_FEEDBACK", "the feedback service")
    feedback_cert: Path | None = client_cert_setting("HITL_REVIEW_FEEDBACK", "the feedback service")
    feedback_key: Path | None = client_key_setting("HITL_REVIEW_FEEDBACK")
    shutdown_grace_seconds: float = grace_setting(10.0)
    port_file: Path | None = port_file_setting("HITL_REVIEW_PORT_FILE")

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> ReviewConfig:
        """Settings from env (default: os.environ), with overrides (not None) on top."""
        return load_server(cls, overrides, env)
