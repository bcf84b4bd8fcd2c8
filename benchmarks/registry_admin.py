"""The registry as the benchmarks use it: a signing key pair, one principal per role
they act as, the ``hitl registry serve`` command line, and policy changes made the
way people make them (an operator proposes, an approver approves).

Principals are written into the database before the registry starts, as ``hitl
registry keygen`` and ``hitl registry principal add`` would. Nothing here times
anything; the benchmarks do."""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from sidecar.auth import hash_token, new_token
from sidecar.policy.signing import generate_key_pair
from sidecar.registry.client import RegistryClient, artefact_version, upload_policy_file
from sidecar.registry.messages import document_from_policy, policy_from_document
from sidecar.registry.model import Role
from sidecar.registry.store import open_store

OPERATOR, APPROVER, SIDECAR = "bench-ops", "bench-risk", "bench-sidecar"
ROLES = {OPERATOR: Role.OPERATOR, APPROVER: Role.APPROVER, SIDECAR: Role.SIDECAR}
MODEL = "bench"
TIGHTEN_BY = 0.02  # added to t_high (the model's and each domain's) by a tightening change

Document = dict[str, Any]


@dataclass(frozen=True)
class RegistrySetup:
    db: str
    private_key: Path
    public_key: Path
    tokens: dict[str, str]
    sidecar_token_file: Path

    def serve_command(self, port_file: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "hitl", "registry", "serve",
                "--signing-key", str(self.private_key), "--db", self.db,
                "--listen", "127.0.0.1:0", "--port-file", str(port_file), *extra]  # fmt: skip


def prepare_registry(workdir: Path) -> RegistrySetup:
    """Keys and principals for a registry on SQLite under workdir."""
    keys = workdir / "keys"
    setup = RegistrySetup(
        db=f"sqlite:{workdir / 'registry.db'}",
        private_key=keys / "signing.key",
        public_key=keys / "signing.pub",
        tokens={name: new_token() for name in ROLES},
        sidecar_token_file=keys / "sidecar.token",
    )
    generate_key_pair(setup.private_key, setup.public_key)
    setup.sidecar_token_file.write_text(setup.tokens[SIDECAR])
    store = open_store(setup.db)
    try:
        for name, role in ROLES.items():
            store.add_principal(
                name, frozenset({role}), hash_token(setup.tokens[name]), "", time.time()
            )
    finally:
        store.close()
    return setup


class Changes:
    """Policy changes through a running registry: the operator uploads and proposes,
    the approver approves. Keeps the head it last saw, to propose against."""

    def __init__(self, address: str, setup: RegistrySetup) -> None:
        self.operator = RegistryClient(address, setup.tokens[OPERATOR])
        self.approver = RegistryClient(address, setup.tokens[APPROVER])
        self.head = 0

    def publish_file(self, policy_file: Path) -> Document:
        """A policy file (calibrators by path) proposed and approved; its document."""
        message = upload_policy_file(self.operator, policy_file)
        self.approve(self.propose_message(message, "benchmark: first policy"))
        return document_from_policy(message)

    def upload(self, artefact: Path) -> dict[str, str]:
        """An artefact stored in the registry; the calibrator reference naming it."""
        data = artefact.read_bytes()
        info = self.operator.put_calibrator(data, artefact.stem, artefact_version(data))
        return {"name": info.name, "version": info.version, "sha256": info.sha256}

    def propose(self, doc: Document, reason: str) -> rpb.Proposal:
        return self.propose_message(policy_from_document(doc), reason)

    def propose_message(self, message: rpb.Policy, reason: str) -> rpb.Proposal:
        """Proposed by the operator against the head: APPLIED at once when it only
        tightens, else PENDING."""
        proposal = self.operator.propose(message, reason, self.head)
        if proposal.state == rpb.APPLIED:
            self.head = proposal.revision
        return proposal

    def approve(self, proposal: rpb.Proposal) -> int:
        """The approver approves a pending proposal; returns the revision it became."""
        if proposal.state != rpb.PENDING:
            raise RuntimeError(f"proposal {proposal.id} is not pending: {proposal}")
        decided = self.approver.approve(proposal.id, "benchmark")
        self.head = decided.revision
        return self.head

    def close(self) -> None:
        self.operator.close()
        self.approver.close()


def with_calibrator(doc: Document, ref: dict[str, str]) -> Document:
    """doc naming ref as the benchmark model's calibrator (a widening change)."""
    changed = copy.deepcopy(doc)
    changed["models"][MODEL]["calibrator"] = dict(ref)
    return changed


def tightened(doc: Document, by: float = TIGHTEN_BY) -> Document:
    """doc with t_high raised by `by` in the model's and every domain's thresholds:
    a change that only tightens, so an operator's proposal is applied at once."""
    changed = copy.deepcopy(doc)
    model = changed["models"][MODEL]
    for table in (model["thresholds"], *model.get("domains", {}).values()):
        table["t_high"] = round(min(table["t_high"] + by, 0.999), 4)
    return changed
