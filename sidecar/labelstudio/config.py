"""The bridge's settings (``hitl labelstudio serve``), each declared once: one frozen
object, validated at start-up. The Label Studio token and project settings are the
sink's (``sidecar.escalation.sinks.labelstudio_settings``), declared there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.escalation.sinks.labelstudio_settings import (
    Projects,
    base_url,
    prefix_setting,
    projects_setting,
    token_setting,
)
from sidecar.review.sla import Sla, parse_sla
from sidecar.settings import (
    Settings,
    address,
    client_cert_setting,
    client_key_setting,
    grace_setting,
    log_level_setting,
    metrics_setting,
    optional_address,
    port_file_setting,
    readable_file,
    service_ca_setting,
    setting,
    token_file_setting,
)
from sidecar.storage.url import check_db

DEFAULT_LISTEN = "127.0.0.1:7436"
DEFAULT_DB = "sqlite:hitl-state/labelstudio.db"


Reviewers = tuple[tuple[str, str], ...]  # (e-mail, principal) pairs: dict() them to look up


def reviewer_map(value: str, var: str) -> Reviewers:
    """``alice@example.com=alice,...``: Label Studio user e-mail -> reviewer principal."""
    found: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        email, sep, principal = part.rpartition("=")
        if not sep or "@" not in email or not principal.strip():
            raise ConfigError(f"{var}: {part!r} is not EMAIL=PRINCIPAL")
        found[email.strip().lower()] = principal.strip()
    return tuple(found.items())


@dataclass(frozen=True, slots=True)
class LabelStudioConfig(Settings):
    """Settings of the Label Studio bridge (docs/labelstudio.md)."""

    url: str = setting(
        "HITL_LABELSTUDIO_URL",
        help="the Label Studio server: labelstudio://HOST:PORT (HTTP) or labelstudios://HOST:PORT",
        parse=base_url,
    )
    token_file: Path | None = token_setting()
    projects: Projects = projects_setting()
    project_prefix: str = prefix_setting()
    listen: str = setting(
        "HITL_LABELSTUDIO_LISTEN",
        DEFAULT_LISTEN,
        "HOST:PORT of the webhook receiver (POST /webhook); port 0 picks one",
        parse=address,
    )
    webhook_secret_file: Path | None = setting(
        "HITL_LABELSTUDIO_WEBHOOK_SECRET_FILE",
        None,
        "file holding the secret Label Studio's webhook sends as 'Authorization: Bearer"
        " <secret>' (a custom header of the webhook); required",
        parse=readable_file,
    )
    reviewers: Reviewers = setting(
        "HITL_LABELSTUDIO_REVIEWERS",
        (),
        "EMAIL=PRINCIPAL,...: the reviewer each Label Studio user's annotations are"
        " recorded as; annotations by anyone else are refused and counted",
        parse=reviewer_map,
        unset="",
        shown="nobody",
    )
    db: str = setting(
        "HITL_LABELSTUDIO_DB",
        DEFAULT_DB,
        "the bridge's store (tasks, deadlines, resolutions): sqlite:PATH or postgresql://...",
        parse=check_db,
    )
    sla: Sla = setting(
        "HITL_LABELSTUDIO_SLA",
        Sla(),
        "deadline per tier, as HITL_REVIEW_SLA (e.g. HUMAN_PRIMARY=15m)",
        parse=parse_sla,
        unset="",
        shown=Sla().describe(),
    )
    poll_seconds: float = setting(
        "HITL_LABELSTUDIO_POLL_SECONDS",
        30.0,
        "how often Label Studio is read for new tasks and for annotations a webhook missed",
    )
    poll_batch: int = setting(
        "HITL_LABELSTUDIO_POLL_BATCH", 200, "unresolved tasks whose annotations one poll reads"
    )
    sweep_seconds: float = setting(
        "HITL_LABELSTUDIO_SWEEP_SECONDS", 10.0, "how often overdue tasks are raised"
    )
    timeout_seconds: float = setting(
        "HITL_LABELSTUDIO_TIMEOUT_SECONDS", 10.0, "a call to Label Studio taking longer fails"
    )
    feedback: str = setting(
        "HITL_LABELSTUDIO_FEEDBACK",
        "",
        "the feedback service's HOST:PORT: every resolution is sent there as a REVIEW event",
        parse=optional_address,
    )
    feedback_token_file: Path | None = token_file_setting(
        "HITL_LABELSTUDIO_FEEDBACK", "the feedback service"
    )
    feedback_ca: Path | None = service_ca_setting(
        "HITL_LABELSTUDIO_FEEDBACK", "the feedback service"
    )
    feedback_cert: Path | None = client_cert_setting(
        "HITL_LABELSTUDIO_FEEDBACK", "the feedback service"
    )
    feedback_key: Path | None = client_key_setting("HITL_LABELSTUDIO_FEEDBACK")
    metrics_addr: str = metrics_setting("HITL_LABELSTUDIO_METRICS_ADDR")
    log_level: str = log_level_setting()
    shutdown_grace_seconds: float = grace_setting(10.0)
    port_file: Path | None = port_file_setting("HITL_LABELSTUDIO_PORT_FILE")

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        for name, var in (
            ("token_file", "HITL_LABELSTUDIO_TOKEN_FILE"),
            ("webhook_secret_file", "HITL_LABELSTUDIO_WEBHOOK_SECRET_FILE"),
        ):
            if values[name] is None:
                raise ConfigError(f"{var} is required")
