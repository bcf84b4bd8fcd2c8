"""Recalibration as a proposal an approver decides (``hitl monitor recalibrate``).

The monitor only tightens. A new calibrator changes every confidence, so it widens
automation and is never applied here: ``recalibrate`` builds it with its evidence and
proposes it, and the registry keeps the proposal PENDING for an approver.

1. The head policy, which must name the model.
2. A dataset snapshot of the model's labelled decisions in [since, until), written as
   ``hitl feedback dataset build`` writes it (content-addressed, rows weighted by the
   inverse of the probability their decision was recorded with).
3. A split by a seeded hash of the request id: ``held_out`` of the rows are kept out.
4. A calibrator fitted on the other rows, and thresholds bounded on their cross-fitted
   confidences for production's class mix, estimated from every decision recorded
   in the window, labelled or not, each counted with its inverse inclusion
   probability (label shift, ``calibrators.shift``).
5. The artefact, with the policy's labels (or the current calibrator's).
6. The evidence on the held-out rows: weighted ECE, and Tier-1 accuracy with its
   interval and the automated share, of the current calibrator at the current
   thresholds against the new calibrator at the new ones.
7. The artefact uploaded, and the head document proposed with the new calibrator, its
   default thresholds and no ``paused`` left on the model (recalibration is how
   automation resumes; the approver decides), the evidence's summary in the reason.

Reads the feedback log, writes under ``out`` and calls the registry; the split, the
proposed document and the evidence's summary are pure functions."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from calibrators.check import check_thresholds
from calibrators.data import Dataset, load_dataset, load_outputs
from calibrators.export import Exported, OnnxPredictor, export_artefact
from calibrators.fit import AUTO, FitResult, cross_fitted, fit_calibrator
from calibrators.methods import method
from calibrators.metrics import Floats, ece, softmax, unit_mean
from calibrators.select import FOLDS
from calibrators.shift import reweighted, shift_to, too_uncertain
from calibrators.thresholds import SegmentThresholds, ThresholdError, recommend_thresholds
from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from monitor import actions
from monitor.actions import Actions, Document, with_evidence
from sidecar.calibration.artefact import parse_metadata
from sidecar.calibration.runtime import build_session
from sidecar.core.policy import ModelPolicy, Policy, parse_policy
from sidecar.core.thresholds import ThresholdTable
from sidecar.errors import CalibratorError, ConfigError, DataError
from sidecar.feedback.dataset import Labelled, Query, compile_dataset, write_dataset
from sidecar.files import replace_file
from sidecar.registry.messages import policy_from_document

PROBABILITIES = "INPUT_KIND_PROBABILITIES"  # a decision whose "logits" are probabilities


class Registry(actions.Registry, Protocol):
    """What recalibration needs of ``sidecar.registry.client.RegistryClient``."""

    def put_calibrator(self, data: bytes, name: str, version: str) -> pb.CalibratorInfo: ...


class Log(Protocol):
    """What recalibration reads of ``sidecar.feedback.store.FeedbackStore``."""

    def labelled(self, model: str, since: float, until: float) -> list[Labelled]: ...

    def recorded(self, model: str, since: float, until: float) -> list[Labelled]: ...


@dataclass(frozen=True)
class Request:
    """What ``hitl monitor recalibrate`` was asked (target None: the policy's)."""

    model: str
    since: float
    until: float
    out: Path
    target: float | None
    low_target: float
    level: float
    method: str = AUTO
    held_out: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The dataset of the window's labelled decisions, and its split."""

    id: str
    path: Path
    data: Dataset
    fitting: Dataset
    held: Dataset


@dataclass(frozen=True)
class Candidate:
    """The new calibrator: its fit, the thresholds bounded for it, the label shift
    they were bounded under, and its artefact (ref: what a policy names it by)."""

    fit: FitResult
    thresholds: SegmentThresholds
    shift: dict[str, Any]
    exported: Exported
    ref: dict[str, str]


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a calibrator as the sidecar runs it, and the
    thresholds it is routed by."""

    ref: Mapping[str, str]
    predictor: OnnxPredictor
    table: ThresholdTable


@dataclass(frozen=True)
class Recalibration:
    proposal: pb.Proposal
    evidence: dict[str, Any]
    evidence_path: Path
    artefact: Path

    def as_json(self) -> dict[str, Any]:
        """What the command prints: the proposal, and where its evidence is."""
        return {
            "proposal": {
                "id": self.proposal.id,
                "state": pb.ProposalState.Name(self.proposal.state),
                "base_revision": self.proposal.base_revision,
                "revision": self.proposal.revision,
                "widening": list(self.proposal.widening),
            },
            "evidence": str(self.evidence_path),
            "artefact": {"path": str(self.artefact), **self.evidence["calibrator"]},
            "summary": summary(self.evidence),
        }


def recalibrate(log: Log, registry: Registry, request: Request) -> Recalibration:
    """Steps 1 to 7 of the module's docstring. ConfigError or DataError naming the
    flag when the input cannot give a defensible proposal: nothing is proposed then."""
    base, doc = Actions(registry).head()
    model = _model(parse_policy({**doc, "revision": base}), request.model)
    target = _target(request, model)
    snapshot = _snapshot(log, request)
    previous, labels = _previous(registry, model, request.out, snapshot.data.classes)
    candidate = _candidate(log, request, target, snapshot, labels)
    draft = proposed(doc, request.model, candidate.ref, candidate.thresholds)
    after = parse_policy({**draft, "revision": base + 1}).models[request.model]
    new = Side(candidate.ref, OnnxPredictor(candidate.exported.path), after.thresholds)
    evidence = evidence_of(request, target, snapshot, candidate, previous, new)
    evidence_path = request.out / f"{snapshot.id}.evidence.json"
    _write(evidence_path, evidence)  # kept even when the registry refuses what follows
    stored = _upload(registry, candidate)
    if stored != candidate.ref:  # the same bytes were stored before, under another name
        evidence = {**evidence, "calibrator": stored}
        _write(evidence_path, evidence)
    document = proposed(doc, request.model, stored, candidate.thresholds)
    reason = with_evidence(f"recalibration: {summary(evidence)}", compact(evidence))
    proposal = registry.propose(policy_from_document(document), reason, base)
    return Recalibration(proposal, evidence, evidence_path, candidate.exported.path)


def evidence_of(
    request: Request,
    target: float,
    snapshot: Snapshot,
    candidate: Candidate,
    before: Side,
    after: Side,
) -> dict[str, Any]:
    """Everything the approver needs to judge the proposal, as JSON."""
    held = snapshot.held
    return {
        "model": request.model,
        "window": {"since": request.since, "until": request.until},
        "dataset": {"id": snapshot.id, "path": str(snapshot.path), "rows": snapshot.data.rows},
        "split": {
            "seed": request.seed,
            "held_out_share": request.held_out,
            "fitting_rows": snapshot.fitting.rows,
            "held_out_rows": held.rows,
        },
        "target": target,
        "low_target": request.low_target,
        "level": request.level,
        "method": candidate.fit.method,
        "selection": None if candidate.fit.selection is None else asdict(candidate.fit.selection),
        "calibrator": candidate.ref,
        "thresholds": _bounded(candidate.thresholds),
        "label_shift": candidate.shift,
        "held_out": {
            "raw_ece": ece(softmax(held.logits), held.labels, weights=held.weights),
            "before": measure(before, held, target, request.level),
            "after": measure(after, held, target, request.level),
        },
    }


# -- the pure parts ------------------------------------------------------------------


def held_out_rows(ids: Sequence[str], share: float, seed: int) -> npt.NDArray[np.bool_]:
    """Which rows are held out: a seeded hash of each request id below share, so the
    same request falls on the same side of every rebuild of the split."""
    draws = [_draw(seed, request_id) for request_id in ids]
    return np.asarray(draws, dtype=np.float64) < share


def _draw(seed: int, request_id: str) -> float:
    digest = hashlib.blake2b(
        f"{seed}:{request_id}".encode(), digest_size=8, person=b"hitl-recalibrate"
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split(data: Dataset, ids: Sequence[str], share: float, seed: int) -> tuple[Dataset, Dataset]:
    """(fitting rows, held-out rows), each's weights scaled to a mean of 1 again."""
    if len(ids) != data.rows:
        raise DataError(data.source, f"{len(ids)} request ids for {data.rows} rows")
    held = held_out_rows(ids, share, seed)
    return _part(data, np.flatnonzero(~held)), _part(data, np.flatnonzero(held))


def _part(data: Dataset, rows: npt.NDArray[np.int64]) -> Dataset:
    part = data.take(rows)
    if part.weights is None or part.rows == 0:
        return part
    return Dataset(part.logits, part.labels, part.domains, part.source, unit_mean(part.weights))


def proposed(
    doc: Mapping[str, Any],
    model: str,
    calibrator: Mapping[str, str],
    thresholds: SegmentThresholds,
) -> Document:
    """doc (a copy) with model's calibrator and default thresholds replaced and every
    ``paused`` of the model's thresholds (default, domains, arms) removed."""
    out: Document = copy.deepcopy(dict(doc))
    body = out["models"][model]
    body["calibrator"] = dict(calibrator)
    body["thresholds"] = {"t_high": thresholds.t_high, "t_low": thresholds.t_low}
    for table in (body, *body.get("experiment", {}).get("arms", [])):
        for entry in (table.get("thresholds", {}), *table.get("domains", {}).values()):
            entry.pop("paused", None)
    return out


def measure(side: Side, data: Dataset, target: float, level: float) -> dict[str, Any]:
    """What one side does to the rows: weighted ECE, and per segment (model-wide first,
    then each domain) the tiers' shares and Tier-1 accuracy with its interval. A
    paused table is measured as if it were not (``paused`` says it is)."""
    probabilities = side.predictor.predict(data.logits)
    checks = check_thresholds(
        probabilities, data.labels, side.table, target, level, data.domains, data.weights
    )
    return {
        "calibrator": dict(side.ref),
        "paused": _paused(side.table),
        "ece": ece(probabilities, data.labels, weights=data.weights),
        "segments": [asdict(check) for check in checks],
    }


def summary(evidence: Mapping[str, Any]) -> str:
    """One line: the data and the method; held-out ECE before -> after; the bound the
    new t_high holds on the fitting rows; held-out Tier-1 accuracy and automated share
    before -> after."""
    rows, split_ = evidence["dataset"]["rows"], evidence["split"]
    held = evidence["held_out"]
    before, after = _model_wide(held["before"]), _model_wide(held["after"])
    bounded = evidence["thresholds"]
    paused = " (paused)" if held["before"]["paused"] else ""
    return (
        f"{evidence['model']} on {evidence['dataset']['id']} ({rows} rows:"
        f" {split_['fitting_rows']} fitted, {split_['held_out_rows']} held out),"
        f" {evidence['method']}; held-out ECE {held['before']['ece']:.4f} ->"
        f" {held['after']['ece']:.4f}; t_high {bounded['t_high']:g} bounds Tier-1 accuracy"
        f" at {bounded['bound']:.4f} (target {evidence['target']:g}, level"
        f" {evidence['level']:g}); held out, Tier-1 accuracy {_share(before)} ->"
        f" {_share(after)}, automated {before['automated_share']:.1%}{paused} ->"
        f" {after['automated_share']:.1%}"
    )


def _share(segment: Mapping[str, Any]) -> str:
    """Tier-1 accuracy with its interval, or why there is none."""
    if segment["tier1_accuracy"] is None:
        return "none automated"
    low, high = segment["tier1_interval"]
    return f"{segment['tier1_accuracy']:.4f} [{low:.4f}, {high:.4f}]"


def compact(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence's figures that fit in a reason; the file holds the rest."""
    held = evidence["held_out"]
    before, after = _model_wide(held["before"]), _model_wide(held["after"])
    shift = evidence["label_shift"]
    return {
        "dataset": evidence["dataset"]["id"],
        "rows": evidence["dataset"]["rows"],
        "fitting_rows": evidence["split"]["fitting_rows"],
        "held_out_rows": evidence["split"]["held_out_rows"],
        "seed": evidence["split"]["seed"],
        "method": evidence["method"],
        "calibrator": evidence["calibrator"],
        "previous": held["before"]["calibrator"],
        "target": evidence["target"],
        "level": evidence["level"],
        "thresholds": evidence["thresholds"],
        "label_shift": {"assumed": "no shift"}
        if "assumed" in shift
        else {
            "production_rows": shift["production_rows"],
            "total_variation": _round(shift["total_variation"]),
        },
        "held_out": {
            "ece": [_round(held["before"]["ece"]), _round(held["after"]["ece"])],
            "tier1_accuracy": [_round(before["tier1_accuracy"]), _round(after["tier1_accuracy"])],
            "tier1_interval": [_round(before["tier1_interval"]), _round(after["tier1_interval"])],
            "automated_share": [
                _round(before["automated_share"]),
                _round(after["automated_share"]),
            ],
            "paused_before": held["before"]["paused"],
        },
        "evidence": f"{evidence['dataset']['id']}.evidence.json",
    }


def _model_wide(measured: Mapping[str, Any]) -> dict[str, Any]:
    segment: dict[str, Any] = measured["segments"][0]  # check_thresholds: "all" first
    return segment


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    return value


def _bounded(thresholds: SegmentThresholds) -> dict[str, Any]:
    return {
        "t_high": thresholds.t_high,
        "t_low": thresholds.t_low,
        "bound": _round(thresholds.tier1_lower_bound),
        "automated_share": _round(thresholds.automated_share),
        "bounded_on": "the fitting rows' cross-fitted confidences",
    }


def _paused(table: ThresholdTable) -> bool:
    return table.default.paused or any(t.paused for t in table.domains.values())


def _ref(name: str, exported: Exported) -> dict[str, str]:
    return {"name": name, "sha256": exported.sha256, "version": exported.metadata.version}


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# -- the steps that read and write ---------------------------------------------------


def _model(policy: Policy, name: str) -> ModelPolicy:
    if name not in policy.models:
        known = ", ".join(sorted(policy.models))
        raise ConfigError(
            f"--model {name}: not in the head policy (revision {policy.revision}), which"
            f" names {known}"
        )
    return policy.models[name]


def _target(request: Request, model: ModelPolicy) -> float:
    target = request.target if request.target is not None else model.target_tier1_accuracy
    if target is None:
        raise ConfigError(
            f"--target: model {request.model} has no target_tier1_accuracy in the policy;"
            " give the Tier-1 accuracy the thresholds must bound"
        )
    if not request.low_target <= target:
        raise ConfigError(f"--low-target {request.low_target} must not exceed the target {target}")
    return target


def _snapshot(log: Log, request: Request) -> Snapshot:
    """The dataset of the window's labelled decisions, written under out, and split."""
    query = Query(request.model, request.since, request.until)
    dataset = compile_dataset(query, log.labelled(query.model, query.since, query.until))
    if not dataset.manifest["rows"]:
        raise ConfigError(
            f"--since/--until: no labelled decision of model {request.model} was decided in"
            f" [{request.since:.0f}, {request.until:.0f}) (unusable labels:"
            f" {sum(dataset.manifest['unusable'].values())})"
        )
    path, _ = write_dataset(request.out, dataset)
    data = load_dataset(path)
    fitting, held = split(data, request_ids(path), request.held_out, request.seed)
    if fitting.rows < 2 * FOLDS or held.rows == 0:
        raise ConfigError(
            f"--since/--until: {data.rows} labelled decisions of model {request.model}"
            f" ({fitting.rows} to fit, {held.rows} held out at --held-out {request.held_out});"
            f" fitting needs at least {2 * FOLDS} and the evidence 1 held out: widen the window"
        )
    return Snapshot(dataset.id, path, data, fitting, held)


def _write(path: Path, evidence: Mapping[str, Any]) -> None:
    replace_file(path, json.dumps(evidence, indent=2).encode() + b"\n")


def request_ids(path: Path) -> list[str]:
    """The request id of each row of a dataset file, in its order (the order
    ``load_dataset`` keeps)."""
    with path.open(encoding="utf-8") as rows:
        return [json.loads(line)["request_id"] for line in rows if line.strip()]


def _previous(
    registry: Registry, model: ModelPolicy, out: Path, classes: int
) -> tuple[Side, list[str]]:
    """The head's calibrator from the registry, checked and kept under out beside the
    evidence (``hitl calibrate evaluate`` can repeat it), with the head's thresholds;
    and the model's class labels: the policy's, else the artefact's."""
    ref = model.calibrator
    info, data = registry.get_calibrator(ref.sha256)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise CalibratorError(f"the registry's calibrator {ref.sha256} holds other bytes")
    path = out / f"previous-{ref.sha256[:16]}.onnx"
    replace_file(path, data)
    predictor = OnnxPredictor(path)
    if predictor.class_count != classes:
        raise DataError(
            str(path), f"calibrates {predictor.class_count} classes; the decisions have {classes}"
        )
    labels = model.labels
    if labels is None:
        session = build_session(data, info.name)
        labels = parse_metadata(session.get_modelmeta().custom_metadata_map).labels
    named = {"name": ref.name, "sha256": ref.sha256, "version": ref.version}
    return Side(named, predictor, model.thresholds), list(labels)


def _candidate(
    log: Log, request: Request, target: float, snapshot: Snapshot, labels: list[str]
) -> Candidate:
    """Fit on the fitting rows, bound thresholds for production's mix, export."""
    fitting = snapshot.fitting
    if request.method != AUTO:
        try:
            method(request.method, fitting.classes)
        except ValueError as exc:
            raise ConfigError(f"--method {request.method}: {exc}") from exc
    production = _production(log, request, fitting.classes, request.out / snapshot.id)
    fit = fit_calibrator(fitting, request.method, FOLDS, request.seed, False, target, request.level)
    thresholds, shift = _bound(request, target, fitting, fit, production)
    name = f"{request.model}-{snapshot.id}"
    exported = export_artefact(fit, request.out / f"{_file_name(name)}.onnx", labels=labels)
    return Candidate(fit, thresholds, shift, exported, _ref(name, exported))


def _upload(registry: Registry, candidate: Candidate) -> dict[str, str]:
    """The artefact in the registry (idempotent); the reference a policy names."""
    exported = candidate.exported
    info = registry.put_calibrator(
        exported.path.read_bytes(), candidate.ref["name"], exported.metadata.version
    )
    return {"name": info.name, "sha256": info.sha256, "version": info.version}


@dataclass(frozen=True)
class Production:
    """The window's recorded outputs, labelled or not, as logits, each with the number
    of decisions it stands for (its inverse inclusion probability): production's whole
    traffic, whose class mix the thresholds are bounded for. (The unlabelled ones alone
    would not do: nearly every escalation is labelled, so they lack most of the
    uncertain traffic.)"""

    logits: Floats
    weights: Floats
    path: Path

    @property
    def rows(self) -> int:
        return int(self.logits.shape[0])


def _production(log: Log, request: Request, classes: int, stem: Path) -> Production | None:
    """The recorded decisions, written as an .npz that ``hitl calibrate thresholds
    --production`` reads (None: there are none)."""
    recorded = [
        item.decision
        for item in log.recorded(request.model, request.since, request.until)
        if len(item.decision.get("logits", [])) == classes
    ]
    if not recorded:
        return None
    kinds = {d.get("input_kind") == PROBABILITIES for d in recorded}
    if len(kinds) > 1:
        raise DataError(
            f"--model {request.model}", "its recorded decisions mix logits and probabilities"
        )
    scores = np.asarray([d["logits"] for d in recorded], dtype=np.float64)
    weights = np.asarray([1.0 / float(d.get("inclusion_probability", 1.0)) for d in recorded])
    path = stem.with_name(f"{stem.name}.production.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kinds == {True}:
        np.savez(path, probabilities=scores, weights=weights)
    else:
        np.savez(path, logits=scores, weights=weights)
    return Production(load_outputs(path, classes), weights, path)


def _bound(
    request: Request,
    target: float,
    fitting: Dataset,
    fitted: FitResult,
    production: Production | None,
) -> tuple[SegmentThresholds, dict[str, Any]]:
    """The model's thresholds on the fitting rows' cross-fitted confidences, for
    production's class mix when there are recorded outputs to estimate it from."""
    probs = cross_fitted(fitting, fitted.method, FOLDS, request.seed)
    shifted, shift = _label_shift(fitting, fitted, production)
    weights = reweighted(fitting.weights, shifted)
    correct = probs.argmax(axis=1) == fitting.labels
    try:
        report = recommend_thresholds(
            probs.max(axis=1), correct, target, request.low_target, request.level, None, weights
        )
    except ThresholdError as exc:
        raise ConfigError(
            f"--target {target}: no threshold can be defended on {fitting.rows} fitting rows:"
            f" {exc} (the best bounds Tier-1 accuracy at {exc.best_bound:.4f}, automating"
            f" {exc.best_share:.1%}); nothing proposed"
        ) from exc
    return report.default, shift


def _label_shift(
    fitting: Dataset, fitted: FitResult, production: Production | None
) -> tuple[Floats | None, dict[str, Any]]:
    """The fitting rows' class weights for production's estimated mix (Saerens et
    al.'s EM on the new calibrator's posteriors), as ``hitl calibrate thresholds
    --production`` does, with the recorded outputs counted by their weights."""
    if production is None:
        return None, {
            "assumed": "production's class mix is the labelled rows' (no decision"
            " recorded in the window)"
        }
    posteriors = fitted.calibrator.predict(production.logits)
    shift, weights = shift_to(fitting.labels, fitting.weights, posteriors, production.weights)
    if problem := too_uncertain(shift, fitting.rows):
        raise DataError(
            "--since/--until",
            f"production's class mix, estimated from the window's {production.rows}"
            f" recorded decisions ({production.path}), is too far from the labelled rows'"
            f" to bound: {problem}",
        )
    return weights, {**asdict(shift), "production": str(production.path)}
