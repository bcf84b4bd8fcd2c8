"""A blocking client of the registry, for the CLI, tests and tools.

Credentials go with every call: a bearer token as metadata, and over TLS the CA
that signed the registry's certificate plus, for mTLS, a client certificate. Errors
are gRPC's own ``grpc.RpcError`` with the registry's status and message."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path

import yaml

from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from hitl_client.stubs.hitl.v1 import registry_pb2_grpc as pb_grpc
from sidecar.registry.messages import policy_from_document
from sidecar.serving import ServiceClient

CHUNK_BYTES = 256 * 1024


class RegistryClient(ServiceClient):
    @functools.cached_property
    def _stub(self) -> pb_grpc.RegistryStub:
        return pb_grpc.RegistryStub(self._channel)

    def get_policy(self, revision: int = 0) -> pb.PolicyRevision:
        return self._stub.GetPolicy(
            pb.GetPolicyRequest(revision=revision), metadata=self._metadata, timeout=self._timeout
        )

    def watch(self, from_revision: int = 0) -> Iterator[pb.SignedPolicy]:
        """Signed heads as they come, until the caller stops iterating."""
        request = pb.WatchRequest(from_revision=from_revision)
        yield from self._stub.Watch(request, metadata=self._metadata)

    def propose(self, policy: pb.Policy, reason: str, base_revision: int) -> pb.Proposal:
        request = pb.ProposeChangeRequest(policy=policy, reason=reason, base_revision=base_revision)
        return self._stub.ProposeChange(request, metadata=self._metadata, timeout=self._timeout)

    def approve(self, proposal_id: int, reason: str = "") -> pb.Proposal:
        request = pb.DecideRequest(proposal_id=proposal_id, reason=reason)
        return self._stub.Approve(request, metadata=self._metadata, timeout=self._timeout)

    def reject(self, proposal_id: int, reason: str = "") -> pb.Proposal:
        request = pb.DecideRequest(proposal_id=proposal_id, reason=reason)
        return self._stub.Reject(request, metadata=self._metadata, timeout=self._timeout)

    def rollback(self, to_revision: int, reason: str) -> pb.Proposal:
        request = pb.RollbackRequest(to_revision=to_revision, reason=reason)
        return self._stub.Rollback(request, metadata=self._metadata, timeout=self._timeout)

    def proposals(self, state: int = 0, limit: int = 0) -> list[pb.Proposal]:
        request = pb.ListProposalsRequest(state=state, limit=limit)  # type: ignore[arg-type]
        return list(
            self._stub.ListProposals(
                request, metadata=self._metadata, timeout=self._timeout
            ).proposals
        )

    def history(self, limit: int = 0, before: int = 0) -> list[pb.PolicyRevision]:
        request = pb.HistoryRequest(limit=limit, before=before)
        return list(
            self._stub.History(request, metadata=self._metadata, timeout=self._timeout).revisions
        )

    def put_calibrator(self, data: bytes, name: str, version: str) -> pb.CalibratorInfo:
        """Upload an artefact (idempotent: the same bytes again answer the stored info)."""
        info = pb.CalibratorInfo(
            sha256=hashlib.sha256(data).hexdigest(), name=name, version=version
        )

        def chunks() -> Iterator[pb.CalibratorChunk]:
            yield pb.CalibratorChunk(info=info, data=data[:CHUNK_BYTES])
            for start in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
                yield pb.CalibratorChunk(data=data[start : start + CHUNK_BYTES])

        return self._stub.PutCalibrator(chunks(), metadata=self._metadata, timeout=self._timeout)

    def get_calibrator(self, sha256: str) -> tuple[pb.CalibratorInfo, bytes]:
        request = pb.GetCalibratorRequest(sha256=sha256)
        info, data = pb.CalibratorInfo(), bytearray()
        for chunk in self._stub.GetCalibrator(
            request, metadata=self._metadata, timeout=self._timeout
        ):
            if chunk.HasField("info"):
                info = chunk.info
            data += chunk.data
        return info, bytes(data)


def upload_policy_file(client: RegistryClient, path: Path) -> pb.Policy:
    """A policy file (YAML or JSON) as a message for ProposeChange: each calibrator it
    names by path (relative to the file) is uploaded, idempotently, and named by its
    file stem instead; revision and issued_at are left to the registry."""
    # Imported here, like artefact_version's imports: the loader loads onnxruntime,
    # which the client's other callers never need.
    from sidecar.policy.loader import read_policy_bytes

    doc = yaml.safe_load(read_policy_bytes(path)) or {}
    doc = {k: v for k, v in doc.items() if k not in ("revision", "issued_at")}
    for model in (doc.get("models") or {}).values():
        ref = model.get("calibrator") or {}
        if "path" in ref:
            artefact = path.parent / ref.pop("path")
            data = artefact.read_bytes()
            ref["name"] = client.put_calibrator(data, artefact.stem, artefact_version(data)).name
    return policy_from_document(doc)


def artefact_version(data: bytes) -> str:
    """The calibration version an artefact's metadata declares."""
    from sidecar.calibration.artefact import parse_metadata
    from sidecar.calibration.runtime import build_session

    session = build_session(data, "the artefact")
    return parse_metadata(session.get_modelmeta().custom_metadata_map).version
