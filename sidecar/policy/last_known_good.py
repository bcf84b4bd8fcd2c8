"""The last-known-good policy on the sidecar's own volume, so a restart while the
registry is down still serves what was in force.

Layout under the directory (``<state_dir>/policy``)::

    signed-policy.pb              the SignedPolicy exactly as received (serialised proto)
    calibrators/<sha256>.onnx     every artefact the policy names, by content hash

Every write goes to a temporary file in the same directory, is fsynced, renamed
over its name and the directory fsynced, so a crash leaves the old file or the new
one, never half of either. Artefacts are written before the policy that names
them, so the policy on disk never names an artefact that is not there.

Nothing here is trusted on the way back in: ``load`` re-verifies the signature with
the configured key, re-parses the document, and re-hashes every artefact the policy
names. A copy that fails any check is logged and ignored, never served (the sidecar
then stays NOT_SERVING until the registry answers); it is left in place for
inspection and overwritten by the next good policy.

Blocking file I/O: call from a worker thread (``asyncio.to_thread``), never on the
event loop."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from google.protobuf.message import DecodeError

from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from sidecar.core.policy import Policy
from sidecar.errors import CalibratorError, PolicyError, SignatureError
from sidecar.files import fsync_directory
from sidecar.policy.signed import open_signed
from sidecar.policy.signing import Verifier

log = structlog.get_logger("hitl.policy")

POLICY_FILE = "signed-policy.pb"
ARTEFACT_DIR = "calibrators"
ARTEFACT_SUFFIX = ".onnx"
_TMP_SUFFIX = ".tmp"
_HASH_BLOCK = 1 << 20


class _Unusable(Exception):
    """Why a stored copy cannot be served (internal to load)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DigestMismatch(CalibratorError):
    """Artefact bytes that do not hash to the sha256 they were asked for."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A last-known-good copy that passed every check."""

    signed: rpb.SignedPolicy
    policy: Policy


class LastKnownGood:
    def __init__(self, directory: Path, verifier: Verifier) -> None:
        self.directory = directory
        self.artefacts = directory / ARTEFACT_DIR
        self._verifier = verifier

    @property
    def policy_path(self) -> Path:
        return self.directory / POLICY_FILE

    def artefact_path(self, sha256: str) -> Path:
        return self.artefacts / f"{sha256}{ARTEFACT_SUFFIX}"

    def has_artefact(self, sha256: str) -> bool:
        return self.artefact_path(sha256).is_file()

    def load(self) -> Stored | None:
        """The stored policy if there is one and it passes every check; else None
        (a failed check is logged as ``policy.last_known_good_rejected``)."""
        self._remove_temporaries()
        try:
            return self._load()
        except _Unusable as exc:
            log.error(
                "policy.last_known_good_rejected",
                path=str(self.policy_path),
                reason=exc.reason,
                error=str(exc),
                detail="not served; waiting for the registry",
            )
            return None

    def _load(self) -> Stored | None:
        try:
            data = self.policy_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Unusable("unreadable", exc.strerror or str(exc)) from exc
        signed = rpb.SignedPolicy()
        try:
            signed.ParseFromString(data)
        except DecodeError as exc:
            raise _Unusable("corrupt", f"not a SignedPolicy: {exc}") from exc
        try:
            policy = open_signed(signed, self._verifier)
        except SignatureError as exc:
            raise _Unusable("signature", str(exc)) from exc
        except PolicyError as exc:
            raise _Unusable("schema", str(exc)) from exc
        for name, model in policy.models.items():
            problem = self._artefact_problem(model.calibrator.sha256)
            if problem is not None:
                raise _Unusable("calibrator", f"models.{name}.calibrator: {problem}")
        return Stored(signed, policy)

    def save(self, signed: rpb.SignedPolicy) -> None:
        """Store signed as the last-known-good policy (its artefacts first)."""
        self._ensure_directories()
        _write_atomic(self.policy_path, [signed.SerializeToString()])

    def write_artefact(self, sha256: str, chunks: Iterable[bytes]) -> Path:
        """Store an artefact under its sha256; raise DigestMismatch, leaving nothing
        behind, when the bytes hash to something else."""
        self._ensure_directories()
        path = self.artefact_path(sha256)
        digest = _write_atomic(path, chunks, expect_sha256=sha256)
        if digest != sha256:
            raise DigestMismatch(f"the registry sent bytes with sha256 {digest} for {sha256}")
        return path

    def prune(self, keep: Collection[str]) -> list[str]:
        """Delete artefacts whose sha256 is not in keep; returns those deleted."""
        removed: list[str] = []
        try:
            entries = list(self.artefacts.iterdir())
        except FileNotFoundError:
            return removed
        for entry in entries:
            sha256 = entry.name.removesuffix(ARTEFACT_SUFFIX)
            if entry.name.endswith(ARTEFACT_SUFFIX) and sha256 not in keep:
                entry.unlink(missing_ok=True)
                removed.append(sha256)
        if removed:
            fsync_directory(self.artefacts)
        return removed

    def _artefact_problem(self, sha256: str) -> str | None:
        path = self.artefact_path(sha256)
        digest = hashlib.sha256()
        try:
            with path.open("rb") as handle:
                while block := handle.read(_HASH_BLOCK):
                    digest.update(block)
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        if digest.hexdigest() != sha256:
            return f"{path} has sha256 {digest.hexdigest()}"
        return None

    def _ensure_directories(self) -> None:
        for directory in (self.directory, self.artefacts):
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
                fsync_directory(directory.parent)

    def _remove_temporaries(self) -> None:
        """Temporary files a crash left mid-write (this process owns the directory)."""
        for directory in (self.directory, self.artefacts):
            if directory.is_dir():
                for entry in directory.glob(f".*{_TMP_SUFFIX}"):
                    entry.unlink(missing_ok=True)


def _write_atomic(path: Path, chunks: Iterable[bytes], expect_sha256: str = "") -> str:
    """Write chunks to path through a fsynced temporary file and a rename; returns the
    sha256 written. When expect_sha256 is given and the bytes hash to anything else,
    the temporary file is deleted and path is left as it was."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if expect_sha256 and digest.hexdigest() != expect_sha256:
            tmp.unlink()
            return digest.hexdigest()
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return digest.hexdigest()
