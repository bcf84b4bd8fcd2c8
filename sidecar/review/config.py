"""The review queue's settings, each declared once (``sidecar.settings.setting``):
one frozen object, validated at start-up. Flags override the environment; a bad
value fails at start-up naming the variable."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.review.consensus import ConsensusPolicy, parse_consensus
from sidecar.review.sla import Sla, parse_sla
from sidecar.review.validation import DEFAULT_MAX_CLAIMS, DEFAULT_MAX_LEASE_SECONDS
from sidecar.settings import (
    ServerSettings,
    address,
    client_ca_setting,
    client_cert_setting,
    client_key_setting,
    grace_setting,
    health_listen_setting,
    log_level_setting,
    metrics_setting,
    one_of,
    optional_address,
    port_file_setting,
    readable_file,
    service_ca_setting,
    setting,
    tls_cert_setting,
    tls_key_setting,
    token_file_setting,
)
from sidecar.storage.url import check_db

DEFAULT_REVIEW_LISTEN = "127.0.0.1:7432"
DEFAULT_REVIEW_DB = "sqlite:hitl-state/review.db"
RATIONALE_RULES = ("override", "always", "never")
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
# A URL prefix the console may show inputs from: it goes into the Content-Security-Policy
# as it is, so nothing that could end or extend a CSP source (space, ; , ' ") is allowed.
_PREFIX = re.compile(r"https?://[^\s;,'\"]+")
_HEADER = re.compile(r"[A-Za-z0-9-]+")


def networks(value: str, var: str) -> Networks:
    """Comma-separated CIDRs (or single addresses); empty: none."""
    found = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{var}: {part!r} is not a CIDR or an address: {exc}") from None
    return tuple(found)


def url_prefixes(value: str, var: str) -> tuple[str, ...]:
    """Comma-separated http(s) URL prefixes, each with its host; empty: none."""
    found = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        if not _PREFIX.fullmatch(part) or not part.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(f"{var}: {part!r} is not an http:// or https:// URL prefix")
        found.append(part)
    return tuple(found)


def header_name(value: str, var: str) -> str:
    if not _HEADER.fullmatch(value):
        raise ConfigError(f"{var} must be an HTTP header name, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ReviewConfig(ServerSettings):
    """Settings of one review queue process (docs/configuration.md)."""

    listen: str = setting(
        "HITL_REVIEW_LISTEN",
        DEFAULT_REVIEW_LISTEN,
        "HOST:PORT; port 0 picks a free one",
        parse=address,
    )
    health_listen: str = health_listen_setting("HITL_REVIEW_HEALTH_LISTEN")
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
    consensus: ConsensusPolicy = setting(
        "HITL_REVIEW_CONSENSUS",
        ConsensusPolicy(),
        "reviews an item needs and how they must agree, per tier and per rule (a rule's"
        " wins), e.g. HUMAN_PRIMARY=2:all,rule:large-amount=3:majority; disagreement goes"
        " to a lead (docs/review.md); unnamed: one review",
        parse=parse_consensus,
        unset="",
        shown=ConsensusPolicy().describe(),
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
        "the feedback service's HOST:PORT: every resolution is sent there as a REVIEW event,"
        " and reviewers' ground truth is read from it",
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
    console_listen: str = setting(
        "HITL_REVIEW_CONSOLE_LISTEN",
        "",
        "HOST:PORT of the reviewers' web console (docs/reviewers.md); empty: no console",
        parse=optional_address,
    )
    console_secret_file: Path | None = setting(
        "HITL_REVIEW_CONSOLE_SECRET_FILE",
        None,
        "file holding the key (32 bytes or more) that signs the console's session cookies;"
        " unset: a random key per process (sessions end with it; one replica only)",
        parse=readable_file,
    )
    console_trusted_proxies: Networks = setting(
        "HITL_REVIEW_CONSOLE_TRUSTED_PROXIES",
        (),
        "CIDRs of authenticating proxies whose user header names the console's caller"
        " (single sign-on); empty: the header is never trusted",
        parse=networks,
        unset="",
        shown="none",
    )
    console_user_header: str = setting(
        "HITL_REVIEW_CONSOLE_USER_HEADER",
        "X-Forwarded-User",
        "the header a trusted proxy names the signed-in principal in",
        parse=header_name,
    )
    console_input_prefixes: tuple[str, ...] = setting(
        "HITL_REVIEW_CONSOLE_INPUT_PREFIXES",
        (),
        "comma-separated http(s) URL prefixes of inputs the console may show (images"
        " linked, text fetched); empty: inputs are shown as their reference",
        parse=url_prefixes,
        unset="",
        shown="none",
    )
    rationale_required: str = setting(
        "HITL_REVIEW_RATIONALE_REQUIRED",
        "override",
        "when the console requires a rationale: override, always or never",
        parse=one_of(*RATIONALE_RULES),
    )
