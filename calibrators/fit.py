"""Fit a temperature calibrator on held-out logits and export it as an artefact."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibrators.export import temperature_graph, write_artefact
from calibrators.metrics import Ints, confidence_histogram, ece, softmax
from calibrators.temperature import apply_temperature, fit_temperature
from sidecar.calibration.artefact import ArtefactMetadata


@dataclass(frozen=True)
class FittedArtefact:
    path: Path
    sha256: str
    metadata: ArtefactMetadata
    temperature: float


def dataset_fingerprint(logits: npt.ArrayLike, labels: Ints) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(logits, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def fit_temperature_artefact(
    logits: npt.ArrayLike,
    labels: Ints,
    out: Path,
    class_labels: list[str] | None = None,
    version: str | None = None,
) -> FittedArtefact:
    """Fit T on (logits, labels), export the graph to out, and describe it."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != labels.shape[0] or z.shape[0] == 0:
        raise ValueError(f"logits {z.shape} and labels {labels.shape} do not pair up")
    classes = z.shape[1]
    temperature = fit_temperature(z, labels)
    calibrated = apply_temperature(z, temperature)
    edges, counts = confidence_histogram(calibrated)
    fitted_at = datetime.now(UTC).replace(microsecond=0)
    fingerprint = dataset_fingerprint(z, labels)
    metadata = ArtefactMetadata(
        method="temperature",
        version=version or f"temperature-{fitted_at:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}",
        class_count=classes,
        labels=tuple(class_labels or [str(i) for i in range(classes)]),
        fitted_at=fitted_at.isoformat(),
        dataset_fingerprint=fingerprint,
        ece_before=ece(softmax(z), labels),
        ece_after=ece(calibrated, labels),
        histogram_edges=tuple(edges),
        histogram_counts=tuple(counts),
    )
    sha256 = write_artefact(temperature_graph(temperature, metadata), out)
    return FittedArtefact(out, sha256, metadata, temperature)
