"""The monitor's actions, through the registry and never around it.

``tightened`` is pure: the head policy's document and a breach in, the document that
answers the breach out (a pause of the model's or a domain's thresholds, or an arm's
thresholds raised to the control's). ``Actions`` proposes it as the monitor's
principal (role operator): the registry judges it, finds that it only tightens, and
applies it at once, so the next revision reaches every sidecar through its watch.
The change's reason carries the breach's summary and its evidence as JSON; the
revision's history shows who (the monitor's principal) changed what, when and why.
A document already as tight as the breach asks (the pause is in force) is not
proposed again."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from monitor.checks import Act, Breach
from sidecar.registry.messages import document_from_policy, policy_from_document
from sidecar.registry.service import MAX_REASON_CHARS

log = structlog.get_logger("hitl.monitor")

Document = dict[str, Any]


def tightened(doc: Mapping[str, Any], model: str, breach: Breach) -> Document:
    """doc with breach answered for model (a copy; doc itself is left alone)."""
    out: Document = copy.deepcopy(dict(doc))
    body = out["models"][model]
    if breach.act is Act.PAUSE and breach.scope.kind == "model":
        for table in _tables(body):
            _pause(table)
    elif breach.act is Act.PAUSE and breach.scope.kind == "domain":
        for table in _tables(body):
            if breach.scope.name in table.get("domains", {}):
                table["domains"][breach.scope.name]["paused"] = True
            elif table is body:  # a domain the policy does not name: its strictest
                strictest = _strictest([body["thresholds"], *body.get("domains", {}).values()])
                body.setdefault("domains", {})[breach.scope.name] = {**strictest, "paused": True}
    elif breach.act is Act.HALT_ARM:
        _halt(body, breach.scope.name)
    return out


def _tables(body: Document) -> list[Document]:
    """The model's own thresholds table and each experiment arm's that has one."""
    arms = body.get("experiment", {}).get("arms", [])
    return [body, *(arm for arm in arms if "thresholds" in arm)]


def _pause(table: Document) -> None:
    table["thresholds"]["paused"] = True
    for thresholds in table.get("domains", {}).values():
        thresholds["paused"] = True


def _halt(body: Document, name: str) -> None:
    """The arm's thresholds (default and per domain) raised to at least the control's:
    the arm automates no more than the control does."""
    arms = body["experiment"]["arms"]
    control = arms[0] if "thresholds" in arms[0] else body
    arm = next(a for a in arms if a["name"] == name)
    own = arm.get("thresholds", control["thresholds"])
    arm["thresholds"] = _stricter(own, control["thresholds"])
    domains = {**control.get("domains", {}), **arm.get("domains", {})}
    if domains:
        arm["domains"] = {
            domain: _stricter(
                arm.get("domains", {}).get(domain, arm["thresholds"]),
                control.get("domains", {}).get(domain, control["thresholds"]),
            )
            for domain in domains
        }


def _stricter(a: Mapping[str, Any], b: Mapping[str, Any]) -> Document:
    return _strictest([a, b])


def _strictest(tables: list[Mapping[str, Any]]) -> Document:
    """The highest t_high and t_low of tables, paused if any is."""
    out: Document = {
        "t_high": max(t["t_high"] for t in tables),
        "t_low": max(t["t_low"] for t in tables),
    }
    if any(t.get("paused") for t in tables):
        out["paused"] = True
    return out


def reason(breach: Breach) -> str:
    """The change's reason: who and why, then the evidence as JSON (cut to fit)."""
    evidence = {"breach": breach.kind, "scope": str(breach.scope), **breach.evidence}
    return with_evidence(f"calibration monitor: {breach.summary}", evidence)


def with_evidence(summary: str, evidence: Mapping[str, Any]) -> str:
    """``<summary>; evidence <compact JSON>``, cut to the registry's limit on a reason."""
    text = f"{summary}; evidence " + json.dumps(
        evidence, sort_keys=True, separators=(",", ":"), default=_plain
    )
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _plain(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class Registry(Protocol):
    """What the monitor needs of ``sidecar.registry.client.RegistryClient``."""

    def get_policy(self, revision: int = 0) -> pb.PolicyRevision: ...

    def propose(self, policy: pb.Policy, reason: str, base_revision: int) -> pb.Proposal: ...

    def get_calibrator(self, sha256: str) -> tuple[pb.CalibratorInfo, bytes]: ...


@dataclass
class Applied:
    model: str
    breach: Breach
    proposal: int
    revision: int  # 0: the registry kept it pending (it judged the change to widen)


class Actions:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def head(self) -> tuple[int, Document]:
        """The head revision's number and document."""
        head = self._registry.get_policy(0)
        return head.revision, document_from_policy(head.policy)

    def apply(self, model: str, breach: Breach) -> Applied | None:
        """Propose the tightening breach calls for, against the head; None when the
        head is already as tight (or the breach only alerts)."""
        if breach.act is Act.ALERT:
            return None
        base, doc = self.head()
        after = tightened(doc, model, breach)
        if after == doc:
            return None
        proposal = self._registry.propose(policy_from_document(after), reason(breach), base)
        applied = Applied(model, breach, proposal.id, proposal.revision)
        log.warning(
            "monitor.tightened",
            model=model,
            breach=breach.kind,
            scope=str(breach.scope),
            proposal=proposal.id,
            revision=proposal.revision,
            summary=breach.summary,
        )
        return applied
