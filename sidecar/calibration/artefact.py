"""The calibrator artefact contract (DESIGN.md, "Calibrator artefact"), shared by the
exporter in ``calibrators`` and the sidecar's runtime. Pure: no I/O.

Input ``logits`` float32 [N, C]; output ``probabilities`` float32 [N, C]. The
model's ``metadata_props`` hold the keys below; JSON-valued ones are marked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.errors import CalibratorError

INPUT_NAME = "logits"
OUTPUT_NAME = "probabilities"

METHOD = "hitl.method"
VERSION = "hitl.calibration_version"
CLASS_COUNT = "hitl.class_count"
LABELS = "hitl.labels"  # JSON list of strings
FITTED_AT = "hitl.fitted_at"  # RFC 3339
DATASET_FINGERPRINT = "hitl.dataset_fingerprint"  # sha256 of the fitting data
ECE_BEFORE = "hitl.ece_before"  # validation top-label ECE, 15 bins, raw
ECE_AFTER = "hitl.ece_after"  # the same after calibration
CONFIDENCE_HISTOGRAM = "hitl.confidence_histogram"  # JSON {"edges": [...], "counts": [...]}
CLASS_HISTOGRAM = "hitl.class_histogram"  # JSON [rows per predicted class]; optional
REQUIRED_KEYS = (
    METHOD,
    VERSION,
    CLASS_COUNT,
    LABELS,
    FITTED_AT,
    DATASET_FINGERPRINT,
    ECE_BEFORE,
    ECE_AFTER,
    CONFIDENCE_HISTOGRAM,
)


@dataclass(frozen=True, slots=True)
class ArtefactMetadata:
    method: str
    version: str
    class_count: int
    labels: tuple[str, ...]
    fitted_at: str
    dataset_fingerprint: str
    ece_before: float
    ece_after: float
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]
    class_counts: tuple[int, ...] = ()  # empty: an artefact from before the key existed

    def to_props(self) -> dict[str, str]:
        """The metadata_props an exporter writes."""
        props = {
            METHOD: self.method,
            VERSION: self.version,
            CLASS_COUNT: str(self.class_count),
            LABELS: json.dumps(list(self.labels)),
            FITTED_AT: self.fitted_at,
            DATASET_FINGERPRINT: self.dataset_fingerprint,
            ECE_BEFORE: repr(self.ece_before),
            ECE_AFTER: repr(self.ece_after),
            CONFIDENCE_HISTOGRAM: json.dumps(
                {"edges": list(self.histogram_edges), "counts": list(self.histogram_counts)}
            ),
        }
        if self.class_counts:
            props[CLASS_HISTOGRAM] = json.dumps(list(self.class_counts))
        return props


def parse_metadata(props: Mapping[str, str]) -> ArtefactMetadata:
    """Read and check the metadata_props of an artefact."""
    missing = [key for key in REQUIRED_KEYS if key not in props]
    if missing:
        raise CalibratorError(f"artefact metadata lacks {', '.join(missing)}")
    try:
        class_count = int(props[CLASS_COUNT])
        labels = json.loads(props[LABELS])
        histogram = json.loads(props[CONFIDENCE_HISTOGRAM])
        metadata = ArtefactMetadata(
            method=props[METHOD],
            version=props[VERSION],
            class_count=class_count,
            labels=tuple(str(label) for label in labels),
            fitted_at=props[FITTED_AT],
            dataset_fingerprint=props[DATASET_FINGERPRINT],
            ece_before=float(props[ECE_BEFORE]),
            ece_after=float(props[ECE_AFTER]),
            histogram_edges=tuple(float(e) for e in histogram["edges"]),
            histogram_counts=tuple(int(c) for c in histogram["counts"]),
            class_counts=tuple(int(c) for c in json.loads(props.get(CLASS_HISTOGRAM, "[]"))),
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise CalibratorError(f"artefact metadata is malformed: {exc}") from exc
    if class_count < 2:
        raise CalibratorError(f"{CLASS_COUNT} is {class_count}; a calibrator needs >= 2 classes")
    if len(metadata.labels) != class_count:
        raise CalibratorError(
            f"{LABELS} has {len(metadata.labels)} labels for {class_count} classes"
        )
    if len(metadata.histogram_counts) + 1 != len(metadata.histogram_edges):
        raise CalibratorError(f"{CONFIDENCE_HISTOGRAM} needs one more edge than counts")
    if metadata.class_counts and len(metadata.class_counts) != class_count:
        raise CalibratorError(
            f"{CLASS_HISTOGRAM} has {len(metadata.class_counts)} counts for {class_count} classes"
        )
    return metadata
