"""The audit log: one JSON line per decision, with everything needed to re-run it
(the input, the thresholds used, policy revision and calibration version) and to
find its trace.

Records are rendered by a structlog chain built once at start-up (orjson, the
serializer structlog recommends for throughput; the logits go out as float32 in
their shortest round-tripping form) and written to their own file (not the
operational log), flushed to the kernel per record."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
import structlog


class AuditLog(Protocol):
    def write(self, event: str, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class StructlogAudit:
    """Writes to path, or to stdout when path is ``-``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO
        if path == "-":
            self._file = sys.stdout.buffer
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = Path(path).open("ab")  # noqa: SIM115 (kept open for the process)
        renderer = structlog.processors.JSONRenderer(
            serializer=orjson.dumps, option=orjson.OPT_SERIALIZE_NUMPY
        )
        self._logger = structlog.wrap_logger(
            structlog.BytesLogger(self._file),
            processors=[renderer],
            cache_logger_on_first_use=True,
        )

    def write(self, event: str, record: Mapping[str, Any]) -> None:
        self._logger.msg(event, **record)

    def close(self) -> None:
        if self._file is not sys.stdout.buffer:
            self._file.close()


class InMemoryAudit:
    """Keeps records in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, event: str, record: Mapping[str, Any]) -> None:
        self.records.append({"event": event, **record})

    def close(self) -> None:
        return None
