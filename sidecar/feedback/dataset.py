"""Datasets compiled from the feedback log: every labelled decision of one model,
its label chosen by a stated rule, weighted by how it came to be labelled, written
as content-addressed JSON lines that ``hitl calibrate`` reads as they are. The
compiling is pure (the store's rows in, bytes and a manifest out);
``write_dataset`` and ``read_manifest`` are its files.

- **Labels.** A decision's label comes from the events about its request whose
  source is among ``sources``, the first source in that order winning (by default
  an outcome beats a review beats a user's correction); within a source the latest
  event wins. ``chosen_label`` is that rule alone, which the Labels RPC answers
  with too. A label its sender retracted is not among them (the store leaves it
  out). Decisions whose sources disagree are counted and listed. A label
  given by name is resolved to its class through the decision's labels. One that
  names no class, one beyond the decision's logits, or one whose name is not its
  class's cannot be fitted on and is counted, not used.
- **Weights.** Each row carries the inverse of the probability with which its
  decision was recorded (1 for an escalated one, 1/sample for a sampled automated
  one), times the stratum's inverse sampling share for ``stratified`` and
  ``class-balanced``, so weighted estimates stand for all traffic.
- **Strategies.** ``all`` keeps every labelled decision; ``stratified`` keeps as
  many of each tier as the rarest tier has; ``class-balanced`` as many of each class
  as the rarest class has. Which rows are kept is a stable hash of the request id,
  so a rebuild keeps the same ones.
- **Identity.** The rows are sorted by request id and written with sorted keys; the
  dataset's id is the SHA-256 of those bytes, and a rebuild of the manifest's query
  over the same (append-only) log gives the identical bytes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import DataError
from sidecar.files import replace_file

STRATEGIES = ("all", "stratified", "class-balanced")
SOURCES = {"outcome": "OUTCOME", "review": "REVIEW", "correction": "EXPLICIT_CORRECTION"}
DEFAULT_SOURCES = ("outcome", "review", "correction")
# The sources the Labels RPC answers from: never review, the queue's own labels,
# which its reviewers are compared against the others.
TRUTH_SOURCES = ("outcome", "correction")
MAX_LISTED = 100  # disagreements listed in a manifest


@dataclass(frozen=True, slots=True)
class Query:
    """What a dataset is compiled from: decisions of model decided in [since, until)
    and the events received before until; ``until`` fixes the log's state."""

    model: str
    since: float
    until: float
    strategy: str = "all"
    sources: tuple[str, ...] = DEFAULT_SOURCES


@dataclass(frozen=True, slots=True)
class Labelled:
    """One decision and the label events about it, as the store joins them."""

    decision: Mapping[str, Any]  # the DecisionRecord's JSON mapping
    events: list[Mapping[str, Any]]  # FeedbackEvents' JSON mappings, in the order received
    received_at: list[float] = field(default_factory=list)  # when each event arrived


@dataclass(frozen=True, slots=True)
class Chosen:
    """The label a decision has by the rule: its class, the source it came from and
    when the event that gave it was received (0 when the store did not say)."""

    class_index: int
    source: str
    received_at: float


@dataclass
class Dataset:
    id: str
    data: bytes
    manifest: dict[str, Any] = field(default_factory=dict)


def label_class(item: Labelled, sources: Sequence[str] = DEFAULT_SOURCES) -> int | None:
    """The class a decision was labelled, by the rule above (None: no usable label)."""
    chosen = chosen_label(item, sources)
    return None if chosen is None else chosen.class_index


def chosen_label(item: Labelled, sources: Sequence[str] = DEFAULT_SOURCES) -> Chosen | None:
    """The label a decision has by the rule above (None: no usable label)."""
    chosen, _ = _label(item.events, sources)
    if chosen is None:
        return None
    source, at = chosen
    index, unfit = _class_of(item.events[at].get("label", {}), item.decision)
    if unfit:
        return None
    received = item.received_at[at] if at < len(item.received_at) else 0.0
    return Chosen(index, source, received)


def compile_dataset(query: Query, labelled: Iterable[Labelled]) -> Dataset:
    rows, unusable, disagreements = [], Counter[str](), []
    for item in labelled:
        chosen, disagreeing = _label(item.events, query.sources)
        if disagreeing:
            disagreements.append({"request_id": item.decision["request_id"], **disagreeing})
        if chosen is None:
            unusable["no label from the chosen sources"] += 1
            continue
        source, at = chosen
        index, unfit = _class_of(item.events[at].get("label", {}), item.decision)
        if unfit:
            unusable[unfit] += 1
            continue
        rows.append(_row(item.decision, source, index))
    kept = _select(rows, query.strategy)
    data = b"".join(
        json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        for row in sorted(kept, key=lambda row: row["request_id"])
    )
    digest = hashlib.sha256(data).hexdigest()
    manifest = _manifest(query, digest, kept, len(rows), unusable, disagreements)
    return Dataset(f"ds-{digest[:16]}", data, manifest)


def write_dataset(directory: Path, dataset: Dataset) -> tuple[Path, Path]:
    """DIR/<id>.jsonl and DIR/<id>.manifest.json, each replaced whole."""
    directory.mkdir(parents=True, exist_ok=True)
    data, manifest = directory / f"{dataset.id}.jsonl", directory / f"{dataset.id}.manifest.json"
    replace_file(data, dataset.data)
    replace_file(manifest, json.dumps(dataset.manifest, indent=2).encode() + b"\n")
    return data, manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest written by write_dataset; DataError naming the file otherwise."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(str(path), f"not a dataset manifest: {exc}") from exc
    if not isinstance(manifest, dict) or not {"id", "sha256", "query"} <= manifest.keys():
        raise DataError(str(path), "not a dataset manifest: it lacks id, sha256 or query")
    return manifest


def query_of(manifest: Mapping[str, Any]) -> Query:
    q = manifest["query"]
    return Query(q["model"], q["since"], q["until"], q["strategy"], tuple(q["label_sources"]))


def _label(
    events: Sequence[Mapping[str, Any]], sources: Sequence[str]
) -> tuple[tuple[str, int] | None, dict[str, Any]]:
    """(source, the position of its event in events) by the rule, and the sources'
    labels when they disagree."""
    latest: dict[str, int] = {}
    for at, event in enumerate(events):  # in the order received: a later one wins
        for source in sources:
            if event.get("type") == f"FEEDBACK_{SOURCES[source]}":
                latest[source] = at
    present = [s for s in sources if s in latest]
    if not present:
        return None, {}
    labels = {s: events[latest[s]].get("label", {}) for s in present}
    said = {s: label.get("class_index", label.get("name")) for s, label in labels.items()}
    disagreeing = {"labels": said} if len(set(map(str, said.values()))) > 1 else {}
    return (present[0], latest[present[0]]), disagreeing


def _class_of(label: Mapping[str, Any], decision: Mapping[str, Any]) -> tuple[int, str]:
    """The class a label names (by index, or by name through the decision's labels),
    or why it cannot be fitted on."""
    labels, name = decision.get("labels", []), label.get("name", "")
    index = int(label["class_index"]) if "class_index" in label else -1
    if index < 0 and name in labels:
        index = labels.index(name)
    if index < 0:
        return index, "label naming no class the decision's labels know"
    if index >= len(decision.get("logits", [])):
        return index, "label outside the decision's classes"
    if name and labels and labels[index] != name:
        return index, "label whose name is not its class's"
    return index, ""


def _row(decision: Mapping[str, Any], source: str, label: int) -> dict[str, Any]:
    kind = "probabilities" if decision.get("input_kind") == "INPUT_KIND_PROBABILITIES" else "logits"
    return {
        "request_id": decision["request_id"],
        kind: decision.get("logits", []),
        "label": label,
        "label_source": source,
        "domain": decision.get("domain", ""),
        "tier": decision.get("tier", "").removeprefix("TIER_"),
        "predicted_class": decision.get("predicted_class", 0),
        "model_version": decision.get("model_version", ""),
        "policy_revision": int(decision.get("policy_revision", 0)),
        "calibration_version": decision.get("calibration_version", ""),
        "experiment_arm": decision.get("experiment_arm", ""),
        "decided_at": decision.get("decided_at", 0.0),
        "weight": 1.0 / float(decision.get("inclusion_probability", 1.0)),
    }


def _select(rows: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    if strategy == "all":
        return rows
    key = "tier" if strategy == "stratified" else "label"
    strata: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        strata[row[key]].append(row)
    if not strata:
        return []
    size = min(len(members) for members in strata.values())
    kept = []
    for members in strata.values():
        members.sort(key=lambda row: _draw(row["request_id"]))
        for row in members[:size]:
            kept.append({**row, "weight": row["weight"] * len(members) / size})
    return kept


def _draw(request_id: str) -> bytes:
    return hashlib.blake2b(request_id.encode(), digest_size=8, person=b"hitl-dataset").digest()


def _manifest(
    query: Query,
    digest: str,
    kept: Sequence[Mapping[str, Any]],
    labelled: int,
    unusable: Counter[str],
    disagreements: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    def counts(key: str) -> dict[str, int]:
        return dict(sorted(Counter(str(row[key]) for row in kept).items()))

    weights = [row["weight"] for row in kept]
    return {
        "id": f"ds-{digest[:16]}",
        "sha256": digest,
        "format": "jsonl",
        "query": {
            "model": query.model,
            "since": query.since,
            "until": query.until,
            "strategy": query.strategy,
            "label_sources": list(query.sources),
        },
        "label_rule": " > ".join(query.sources) + "; within a source, the latest event",
        "rows": len(kept),
        "labelled_decisions": labelled,
        "unusable": dict(sorted(unusable.items())),
        "per_tier": counts("tier"),
        "per_label_source": counts("label_source"),
        "per_class": counts("label"),
        "weights": {
            "sum": sum(weights),
            "min": min(weights, default=0.0),
            "max": max(weights, default=0.0),
        },
        "model_versions": sorted({row["model_version"] for row in kept}),
        "policy_revisions": sorted({row["policy_revision"] for row in kept}),
        "calibration_versions": sorted({row["calibration_version"] for row in kept}),
        "disagreements": len(disagreements),
        "disagreements_listed": list(disagreements[:MAX_LISTED]),
    }
