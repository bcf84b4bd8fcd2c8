"""The calibration monitor's settings, each declared once (``sidecar.settings``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.errors import ConfigError
from sidecar.feedback.dataset import DEFAULT_SOURCES, SOURCES
from sidecar.settings import (
    Settings,
    address,
    client_cert_setting,
    client_key_setting,
    count,
    credentials_of,
    env_of,
    fraction,
    log_level_setting,
    metrics_setting,
    one_of,
    port_file_setting,
    positive,
    service_ca_setting,
    setting,
    token_file_setting,
)
from sidecar.storage.url import check_db

if TYPE_CHECKING:
    from sidecar.registry.client import RegistryClient

ENV_REGISTRY_PREFIX = "HITL_MONITOR_REGISTRY"


def _label_sources(value: str, var: str) -> tuple[str, ...]:
    sources = tuple(part.strip() for part in value.split(",") if part.strip())
    if not sources or len(set(sources)) != len(sources) or not set(sources) <= SOURCES.keys():
        raise ConfigError(
            f"{var} must name some of {', '.join(SOURCES)}, each once, comma-separated; "
            f"got {value!r}"
        )
    return sources


@dataclass(frozen=True, slots=True)
class MonitorConfig(Settings):
    """Settings of the calibration monitor (docs/configuration.md)."""

    db: str = setting(
        "HITL_MONITOR_DB",
        "sqlite:hitl-feedback/feedback.db",
        "the feedback service's database (sqlite:PATH or postgresql://...), read only",
        parse=check_db,
    )
    registry: str = setting(
        ENV_REGISTRY_PREFIX,
        "127.0.0.1:7433",
        "HOST:PORT of the registry the monitor reads policies from and tightens through",
        parse=address,
    )
    registry_token_file: Path | None = token_file_setting(ENV_REGISTRY_PREFIX, "the registry")
    registry_ca: Path | None = service_ca_setting(ENV_REGISTRY_PREFIX, "the registry")
    registry_cert: Path | None = client_cert_setting(ENV_REGISTRY_PREFIX, "the registry")
    registry_key: Path | None = client_key_setting(ENV_REGISTRY_PREFIX)
    interval_seconds: float = setting(
        "HITL_MONITOR_INTERVAL_SECONDS", 10.0, "how often every model is checked", parse=positive
    )
    window_seconds: float = setting(
        "HITL_MONITOR_WINDOW_SECONDS",
        86400.0,
        "the decisions a check weighs: those decided this long ago or since",
        parse=positive,
    )
    min_labels: int = setting(
        "HITL_MONITOR_MIN_LABELS", 200, "labelled decisions before ECE is judged", parse=count()
    )
    min_recorded: int = setting(
        "HITL_MONITOR_MIN_RECORDED", 500, "recorded decisions before PSI is judged", parse=count()
    )
    level: float = setting(
        "HITL_MONITOR_LEVEL", 0.95, "confidence level of the Tier-1 interval", parse=fraction
    )
    alpha: float = setting(
        "HITL_MONITOR_ALPHA",
        0.05,
        "false-halt rate of the experiments' always-valid test",
        parse=fraction,
    )
    group_attribute: str = setting(
        "HITL_MONITOR_GROUP_ATTRIBUTE",
        "",
        "a string attribute of the requests whose values are groups with their own Tier-1 "
        "accuracy (empty: none)",
    )
    label_sources: tuple[str, ...] = setting(
        "HITL_MONITOR_LABEL_SOURCES",
        ",".join(DEFAULT_SOURCES),
        "where a label may come from, the first winning (outcome, review, correction); "
        "review alone: only what people saw, the audit sample for Tier-1",
        parse=_label_sources,
    )
    act: str = setting(
        "HITL_MONITOR_ACT",
        "tighten",
        "tighten (apply the tightenings through the registry) or alert (metrics and logs only)",
        parse=one_of("tighten", "alert"),
    )
    metrics_addr: str = metrics_setting("HITL_MONITOR_METRICS_ADDR")
    log_level: str = log_level_setting()
    port_file: Path | None = port_file_setting("HITL_MONITOR_PORT_FILE")

    def registry_client(self) -> RegistryClient:
        """A client of the registry as the monitor's principal (the credential files
        read now; ConfigError naming one that cannot be)."""
        from sidecar.registry.client import RegistryClient

        credentials = credentials_of(self, "registry")
        return RegistryClient(
            self.registry,
            credentials.token,
            ca=credentials.ca,
            cert=credentials.cert,
            key=credentials.key,
        )

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        for name in ("level", "alpha"):
            if not 0.0 < values[name] < 1.0:
                raise ConfigError(
                    f"{env_of(cls, name)} must be between 0 and 1, not {values[name]}"
                )
