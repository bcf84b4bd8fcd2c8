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
from sidecar.core.policy import ModelPolicy, parse_policy
from sidecar.core.thresholds import ThresholdTable
from sidecar.core.widening import widening
from sidecar.registry.messages import document_from_policy, policy_from_document
from sidecar.registry.service import MAX_REASON_CHARS

log = structlog.get_logger("hitl.monitor")

Document = dict[str, Any]


def tightened(doc: Mapping[str, Any], model: str, breach: Breach) -> Document:
    """doc with breach answered for model (a copy; doc itself is left alone)."""
    out: Document = copy.deepcopy(dict(doc))
    body = out["models"][model]
    compiled = parse_policy({**doc, "revision": 1}).models[model]
    if breach.act is Act.PAUSE and breach.scope.kind == "model":
        for thresholds in _every_row(body):
            thresholds["paused"] = True
    elif breach.act is Act.PAUSE and breach.scope.kind == "domain":
        domain = breach.scope.name
        for table, applies in zip(_tables(body), _compiled_tables(compiled), strict=True):
            row = table.setdefault("domains", {}).setdefault(domain, _row(applies, domain))
            row["paused"] = True
    elif breach.act is Act.HALT_ARM:
        _halt(body, compiled, breach.scope.name)
    return out


def _tables(body: Document) -> list[Document]:
    """The model's own thresholds table and each experiment arm's that has one."""
    arms = body.get("experiment", {}).get("arms", [])
    return [body, *(arm for arm in arms if "thresholds" in arm)]


def _compiled_tables(model: ModelPolicy) -> list[ThresholdTable]:
    """The compiled tables of ``_tables``, in the same order."""
    arms = model.experiment.arms if model.experiment is not None else ()
    return [model.thresholds, *(arm.thresholds for arm in arms if arm.thresholds is not None)]


def _every_row(body: Document) -> list[Document]:
    return [
        row
        for table in _tables(body)
        for row in [table["thresholds"], *table.get("domains", {}).values()]
    ]


def _row(table: ThresholdTable, domain: str | None) -> Document:
    """The thresholds table gives a domain (None: its default), as a document."""
    thresholds = table.default if domain is None else table.for_domain(domain)
    row: Document = {"t_high": thresholds.t_high, "t_low": thresholds.t_low}
    if thresholds.paused:
        row["paused"] = True
    return row


def _halt(body: Document, model: ModelPolicy, name: str) -> None:
    """The arm's thresholds, for its default and every domain any table names, raised
    to at least what the control gets there: the arm automates no more than the
    control does, and nowhere more than it did."""
    assert model.experiment is not None
    arms = model.experiment.arms
    control = arms[0].thresholds or model.thresholds
    arm = next(a for a in arms if a.name == name)
    own = arm.thresholds or model.thresholds
    domains = sorted({d for table in _compiled_tables(model) for d in table.domains})
    arm_doc = next(a for a in body["experiment"]["arms"] if a["name"] == name)
    arm_doc["thresholds"] = _strictest([_row(own, None), _row(control, None)])
    if domains:
        arm_doc["domains"] = {d: _strictest([_row(own, d), _row(control, d)]) for d in domains}


def _strictest(rows: list[Mapping[str, Any]]) -> Document:
    """The highest t_high and t_low of rows, paused if any is."""
    out: Document = {
        "t_high": max(t["t_high"] for t in rows),
        "t_low": max(t["t_low"] for t in rows),
    }
    if any(t.get("paused") for t in rows):
        out["paused"] = True
    return out


class WouldWiden(RuntimeError):
    """A tightening that the registry would judge to widen: a bug, never proposed."""


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

    def history(self, limit: int = 0, before: int = 0) -> list[pb.PolicyRevision]: ...


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
        head is already as tight (or the breach only alerts). WouldWiden when the
        change is not a tightening by the registry's own judgement (proposed, it would
        wait for an approver while the monitor proposed it again at every check)."""
        if breach.act is Act.ALERT:
            return None
        base, doc = self.head()
        after = tightened(doc, model, breach)
        if after == doc:
            return None
        widens = widening(*(parse_policy({**d, "revision": 1}) for d in (doc, after)))
        if widens:
            raise WouldWiden(f"{breach.kind} for {model}: {'; '.join(widens)}")
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
