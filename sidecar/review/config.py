"""The review queue's settings: one frozen object, validated at start-up.

Every environment variable the queue reads is a constant here (the log level and
shutdown grace are the sidecar's, shared). Explicit arguments (the CLI's flags)
override the environment; a bad value fails at start-up naming the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.review.sla import Sla, parse_sla
from sidecar.settings import ENV_GRACE, ENV_LOG_LEVEL, check_address, check_log_level, positive
from sidecar.storage.url import check_db

ENV_REVIEW_LISTEN = "HITL_REVIEW_LISTEN"
ENV_REVIEW_DB = "HITL_REVIEW_DB"
ENV_REVIEW_SLA = "HITL_REVIEW_SLA"
ENV_REVIEW_SWEEP = "HITL_REVIEW_SWEEP_SECONDS"
ENV_REVIEW_METRICS_ADDR = "HITL_REVIEW_METRICS_ADDR"
ENV_REVIEW_WORKERS = "HITL_REVIEW_WORKERS"
ENV_REVIEW_PORT_FILE = "HITL_REVIEW_PORT_FILE"

DEFAULT_REVIEW_LISTEN = "127.0.0.1:7432"
DEFAULT_REVIEW_DB = "sqlite:hitl-state/review.db"


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    """Settings of one review queue process (docs/review.md)."""

    listen: str = DEFAULT_REVIEW_LISTEN
    db: str = DEFAULT_REVIEW_DB
    sla: Sla = field(default_factory=Sla)
    sweep_seconds: float = 10.0
    metrics_addr: str = ""
    log_level: str = "info"
    workers: int = 16
    shutdown_grace_seconds: float = 10.0
    port_file: Path | None = None

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> ReviewConfig:
        """Settings from env (default: os.environ), with overrides (not None) on top."""
        env = os.environ if env is None else env
        given = {k: v for k, v in (overrides or {}).items() if v is not None}

        def text(name: str, var: str, default: str) -> str:
            return str(given.get(name, env.get(var, default)))

        listen = text("listen", ENV_REVIEW_LISTEN, DEFAULT_REVIEW_LISTEN)
        check_address(listen, ENV_REVIEW_LISTEN)
        metrics_addr = text("metrics_addr", ENV_REVIEW_METRICS_ADDR, "")
        if metrics_addr:
            check_address(metrics_addr, ENV_REVIEW_METRICS_ADDR)
        level = text("log_level", ENV_LOG_LEVEL, "info").lower()
        check_log_level(level)
        port_file = text("port_file", ENV_REVIEW_PORT_FILE, "")
        return cls(
            listen=listen,
            db=check_db(text("db", ENV_REVIEW_DB, DEFAULT_REVIEW_DB), ENV_REVIEW_DB),
            sla=parse_sla(text("sla", ENV_REVIEW_SLA, ""), ENV_REVIEW_SLA),
            sweep_seconds=positive(text("sweep_seconds", ENV_REVIEW_SWEEP, "10"), ENV_REVIEW_SWEEP),
            metrics_addr=metrics_addr,
            log_level=level,
            workers=int(positive(text("workers", ENV_REVIEW_WORKERS, "16"), ENV_REVIEW_WORKERS)),
            shutdown_grace_seconds=positive(
                text("shutdown_grace_seconds", ENV_GRACE, "10"), ENV_GRACE
            ),
            port_file=Path(port_file) if port_file else None,
        )
