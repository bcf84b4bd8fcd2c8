"""Operational logs: structlog JSON lines on stdout, with the current trace and span
ids. Configured once at start-up; levels below the configured one are no-ops."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

# Every write to stdout takes this lock: the log's lines, and the audit log's chunks
# when it goes to stdout too (HITL_AUDIT_LOG=-, as in Kubernetes). Without it a line
# logged while a chunk outgrows the pipe lands inside an audit record.
STDOUT_LOCK = threading.Lock()


class StdoutLogger:
    """structlog's output: each event a line on stdout, written under STDOUT_LOCK."""

    def msg(self, message: str) -> None:
        with STDOUT_LOCK:
            sys.stdout.write(message + "\n")
            sys.stdout.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event.setdefault("span_id", trace.format_span_id(context.span_id))
    return event


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_ids,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=lambda *_args: StdoutLogger(),
        cache_logger_on_first_use=True,
    )
