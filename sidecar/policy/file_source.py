"""A policy read from a local file and reloaded when the file changes.

The file is polled (stat, then a content hash) rather than watched with inotify:
Kubernetes ConfigMap updates swap a symlink, which polling sees and inotify on the
file does not. A new file that fails to parse or whose calibrators fail to load is
logged and ignored: the snapshot in force stays."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import structlog

from sidecar.errors import PolicyError
from sidecar.policy.loader import build_snapshot, parse_policy_bytes, read_policy_bytes
from sidecar.policy.snapshot import Snapshot, SnapshotHolder
from sidecar.policy.source import SourceStats, rejection_reason

log = structlog.get_logger("hitl.policy")


class FilePolicySource:
    def __init__(self, path: Path, holder: SnapshotHolder, poll_seconds: float = 1.0) -> None:
        self._path = path
        self._holder = holder
        self._poll = poll_seconds
        self.stats = SourceStats()
        self._seen: tuple[int, int, int] | None = None
        self._digest = ""

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._poll)

    async def check(self) -> None:
        """Load the file if it changed since the last look; keep the old one on error."""
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            if self._seen is not None or self._holder.current is None:
                log.warning("policy.unreadable", path=str(self._path), error=exc.strerror)
            self._seen = None
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            snapshot = await asyncio.to_thread(self._load)
        except PolicyError as exc:
            reason = rejection_reason(exc)
            self.stats.rejected[reason] += 1
            log.error("policy.rejected", path=str(self._path), reason=reason, error=str(exc))
            return
        if snapshot is not None:
            self._holder.swap(snapshot)
            log.info(
                "policy.loaded",
                source="file",
                path=str(self._path),
                revision=snapshot.policy.revision,
                models=sorted(snapshot.policy.models),
            )

    def _load(self) -> Snapshot | None:
        data = read_policy_bytes(self._path)
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return None
        policy = parse_policy_bytes(data, str(self._path))
        snapshot = build_snapshot(
            policy, self._path.parent, f"file:{self._path}", self._holder.current
        )
        self._digest = digest
        return snapshot
