"""Registry proto messages <-> policy documents and registry records.

A policy document is the policy file's schema as plain data (what
``sidecar.core.policy.parse_policy`` reads); the ``Policy`` message carries the same
fields. Defaults are left out of documents (no empty lists, no zero audit rate), so
one policy has one canonical JSON form whichever way it arrived."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from sidecar.core.diff import FieldChange
from sidecar.errors import PolicyError
from sidecar.registry.model import CalibratorInfo, Proposal, ProposalState, Revision

Document = dict[str, Any]


def document_from_policy(message: pb.Policy) -> Document:
    """The document of message, without revision and issued_at."""
    doc: Document = {}
    if message.max_age_seconds:
        doc["max_age_seconds"] = message.max_age_seconds
    doc["models"] = {name: _model_doc(model) for name, model in message.models.items()}
    return doc


def policy_from_document(doc: Mapping[str, Any], revision: int = 0) -> pb.Policy:
    """The message of a document (as parsed from YAML or JSON or stored). Raises
    PolicyError naming the field when a value has the wrong shape for the message;
    values are validated by parse_policy, not here."""
    try:
        message = pb.Policy(revision=revision, max_age_seconds=doc.get("max_age_seconds") or 0)
        for name, model in (doc.get("models") or {}).items():
            message.models[name].CopyFrom(_model_message(model))
    except (TypeError, ValueError, AttributeError) as exc:
        raise PolicyError("models", f"does not fit the policy schema: {exc}") from exc
    return message


def _model_doc(model: pb.ModelPolicy) -> Document:
    ref = model.calibrator
    doc: Document = {
        "calibrator": {"name": ref.name, "version": ref.version, "sha256": ref.sha256},
        "thresholds": _thresholds_doc(model.thresholds),
    }
    if model.labels:
        doc["labels"] = list(model.labels)
    if model.domains:
        doc["domains"] = {d: _thresholds_doc(t) for d, t in model.domains.items()}
    if model.rules:
        doc["rules"] = [
            {"id": rule.id, "when": [_condition_doc(c) for c in rule.when]} for rule in model.rules
        ]
    if model.HasField("experiment"):
        doc["experiment"] = _experiment_doc(model.experiment)
    if model.audit_sample_rate:
        doc["audit_sample_rate"] = model.audit_sample_rate
    if model.HasField("target_tier1_accuracy"):
        doc["target_tier1_accuracy"] = model.target_tier1_accuracy
    if model.unknown_domain:
        doc["unknown_domain"] = model.unknown_domain
    if model.HasField("max_ece"):
        doc["max_ece"] = model.max_ece
    if model.HasField("drift"):
        drift = model.drift
        doc["drift"] = {"window": drift.window, "psi_alarm": drift.psi_alarm}
        if drift.HasField("psi_recover"):
            doc["drift"]["psi_recover"] = drift.psi_recover
        if drift.action:
            doc["drift"]["action"] = drift.action
    return doc


def _thresholds_doc(thresholds: pb.Thresholds) -> Document:
    doc: Document = {"t_high": thresholds.t_high, "t_low": thresholds.t_low}
    if thresholds.paused:
        doc["paused"] = True
    return doc


def _condition_doc(condition: pb.Condition) -> Document:
    value: object
    if condition.values:
        value = [_scalar_doc(v) for v in condition.values]
    else:
        value = _scalar_doc(condition.value)
    return {"field": condition.field, "op": condition.op, "value": value}


def _scalar_doc(scalar: pb.Scalar) -> object:
    kind = scalar.WhichOneof("kind")
    return None if kind is None else getattr(scalar, kind)


def _experiment_doc(experiment: pb.Experiment) -> Document:
    arms = []
    for arm in experiment.arms:
        doc: Document = {"name": arm.name, "weight": arm.weight}
        if arm.HasField("thresholds"):
            doc["thresholds"] = _thresholds_doc(arm.thresholds)
        if arm.domains:
            doc["domains"] = {d: _thresholds_doc(t) for d, t in arm.domains.items()}
        arms.append(doc)
    return {"name": experiment.name, "unit": experiment.unit or "request_id", "arms": arms}


def _model_message(doc: Mapping[str, Any]) -> pb.ModelPolicy:
    ref = doc.get("calibrator") or {}
    model = pb.ModelPolicy(
        calibrator=pb.CalibratorRef(
            name=ref.get("name", ""), version=ref.get("version", ""), sha256=ref.get("sha256", "")
        ),
        thresholds=_thresholds_message(doc.get("thresholds") or {}),
        labels=doc.get("labels") or [],
        audit_sample_rate=doc.get("audit_sample_rate") or 0.0,
    )
    for domain, thresholds in (doc.get("domains") or {}).items():
        model.domains[domain].CopyFrom(_thresholds_message(thresholds))
    for rule in doc.get("rules") or []:
        model.rules.append(
            pb.Rule(id=rule.get("id", ""), when=[_condition_message(c) for c in rule["when"]])
        )
    if (experiment := doc.get("experiment")) is not None:
        model.experiment.CopyFrom(_experiment_message(experiment))
    if (target := doc.get("target_tier1_accuracy")) is not None:
        model.target_tier1_accuracy = target
    if (unknown := doc.get("unknown_domain")) is not None:
        model.unknown_domain = unknown
    if (max_ece := doc.get("max_ece")) is not None:
        model.max_ece = max_ece
    if (drift := doc.get("drift")) is not None:
        model.drift.CopyFrom(
            pb.Drift(
                window=drift.get("window", 0),
                psi_alarm=drift.get("psi_alarm", 0.0),
                psi_recover=drift.get("psi_recover"),
                action=drift.get("action", ""),
            )
        )
    return model


def _thresholds_message(doc: Mapping[str, Any]) -> pb.Thresholds:
    return pb.Thresholds(
        t_high=doc.get("t_high", 0.0), t_low=doc.get("t_low", 0.0), paused=doc.get("paused", False)
    )


def _condition_message(doc: Mapping[str, Any]) -> pb.Condition:
    condition = pb.Condition(field=doc.get("field", ""), op=doc.get("op", ""))
    value = doc.get("value")
    if isinstance(value, list):
        condition.values.extend(_scalar_message(v) for v in value)
    elif value is not None:
        condition.value.CopyFrom(_scalar_message(value))
    return condition


def _scalar_message(value: object) -> pb.Scalar:
    if isinstance(value, str):
        return pb.Scalar(text=value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a condition value must be a string or a number, not {value!r}")
    return pb.Scalar(number=float(value))


def _experiment_message(doc: Mapping[str, Any]) -> pb.Experiment:
    experiment = pb.Experiment(name=doc.get("name", ""), unit=doc.get("unit", "request_id"))
    for arm_doc in doc.get("arms") or []:
        arm = pb.Arm(name=arm_doc.get("name", ""), weight=arm_doc.get("weight", 0.0))
        if "thresholds" in arm_doc:
            arm.thresholds.CopyFrom(_thresholds_message(arm_doc["thresholds"]))
        for domain, thresholds in (arm_doc.get("domains") or {}).items():
            arm.domains[domain].CopyFrom(_thresholds_message(thresholds))
        experiment.arms.append(arm)
    return experiment


# -- registry records -------------------------------------------------------------


def changes_message(changes: Iterable[FieldChange]) -> list[pb.FieldChange]:
    return [pb.FieldChange(path=c.path, before=c.before, after=c.after) for c in changes]


def proposal_message(proposal: Proposal, changes: Iterable[FieldChange]) -> pb.Proposal:
    return pb.Proposal(
        id=proposal.id,
        base_revision=proposal.base_revision,
        policy=policy_from_document(json.loads(proposal.document)),
        proposed_by=proposal.proposed_by,
        reason=proposal.reason,
        state=pb.ProposalState.Value(proposal.state.value),
        widening=proposal.widening,
        changes=changes_message(changes),
        created_at=proposal.created_at,
        decided_by=proposal.decided_by,
        decided_at=proposal.decided_at,
        decision_reason=proposal.decision_reason,
        revision=proposal.revision,
        rollback_of=proposal.rollback_of,
    )


def revision_message(
    revision: Revision, changes: Iterable[FieldChange], signed: pb.SignedPolicy | None = None
) -> pb.PolicyRevision:
    return pb.PolicyRevision(
        revision=revision.revision,
        policy=policy_from_document(json.loads(revision.document), revision.revision),
        signed=signed,
        proposal_id=revision.proposal_id,
        proposed_by=revision.proposed_by,
        approved_by=revision.approved_by,
        reason=revision.reason,
        created_at=revision.created_at,
        changes=changes_message(changes),
    )


def state_of(message: int) -> ProposalState | None:
    """The store's state for a ProposalState number (None: unspecified, any)."""
    if message == pb.PROPOSAL_STATE_UNSPECIFIED:
        return None
    return ProposalState(pb.ProposalState.Name(message))  # type: ignore[arg-type]


def calibrator_message(info: CalibratorInfo) -> pb.CalibratorInfo:
    return pb.CalibratorInfo(
        sha256=info.sha256,
        name=info.name,
        version=info.version,
        size=info.size,
        uploaded_by=info.uploaded_by,
        uploaded_at=info.uploaded_at,
    )
