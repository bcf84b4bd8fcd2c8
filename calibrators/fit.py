"""Fit a calibrator on held-out labelled outputs, by name or by cross-validated
selection, and keep what the artefact's metadata needs. A fit round-trips through
JSON (``save_fit`` / ``load_fit``) so it can be evaluated and exported later."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from calibrators.data import Dataset
from calibrators.methods import Fitted, method
from calibrators.metrics import Floats, class_counts, confidence_histogram, ece, softmax
from calibrators.select import FOLDS, Score, Selection, select_method
from sidecar.errors import DataError

AUTO = "auto"
FORMAT = "hitl-calibrator-fit/1"


@dataclass(frozen=True, eq=False)
class FitResult:
    calibrator: Fitted
    selection: Selection | None
    rows: int
    dataset_fingerprint: str
    fitted_at: str  # RFC 3339
    ece_before: float
    ece_after: float  # out-of-fold when the method was selected, else on the fitting data
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]
    class_counts: tuple[int, ...] = ()  # rows per predicted class after calibration

    @property
    def method(self) -> str:
        return self.calibrator.method

    def default_version(self) -> str:
        stamp = datetime.fromisoformat(self.fitted_at).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.method}-{stamp}-{self.dataset_fingerprint[:8]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method,
            "class_count": self.calibrator.class_count,
            "parameters": self.calibrator.parameters(),
            "selection": None if self.selection is None else asdict(self.selection),
            "rows": self.rows,
            "dataset_fingerprint": self.dataset_fingerprint,
            "fitted_at": self.fitted_at,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "histogram": {
                "edges": list(self.histogram_edges),
                "counts": list(self.histogram_counts),
            },
            "class_counts": list(self.class_counts),
        }


def fit_calibrator(
    data: Dataset,
    method_name: str = AUTO,
    folds: int = FOLDS,
    seed: int = 0,
    progress: bool = False,
    target: float | None = None,
    level: float = 0.95,
) -> FitResult:
    """Fit method_name, or with "auto" the method ``select_method`` chooses: with a
    Tier-1 target, the one that automates most at it out of fold; else by NLL."""
    if data.rows < 2 * folds:
        raise DataError(data.source, f"{data.rows} rows; fitting needs at least {2 * folds}")
    selection = None
    if method_name == AUTO:
        selection = select_method(
            data.logits,
            data.labels,
            folds=folds,
            seed=seed,
            progress=progress,
            target=target,
            level=level,
            weights=data.weights,
        )
        method_name = selection.chosen
    try:
        chosen = method(method_name, data.classes)
    except ValueError as exc:
        raise DataError(data.source, str(exc)) from exc
    calibrator = chosen.fit(data.logits, data.labels, data.weights)
    calibrated = calibrator.predict(data.logits)
    edges, counts = confidence_histogram(calibrated, weights=data.weights)
    ece_after = (
        next(s.ece for s in selection.scores if s.method == selection.chosen)
        if selection
        else ece(calibrated, data.labels, weights=data.weights)
    )
    return FitResult(
        calibrator=calibrator,
        selection=selection,
        rows=data.rows,
        dataset_fingerprint=data.fingerprint(),
        fitted_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
        ece_before=ece(softmax(data.logits), data.labels, weights=data.weights),
        ece_after=ece_after,
        histogram_edges=tuple(edges),
        histogram_counts=tuple(counts),
        class_counts=tuple(class_counts(calibrated, data.weights)),
    )


def cross_fitted(data: Dataset, method_name: str, folds: int = FOLDS, seed: int = 0) -> Floats:
    """Each row's calibrated probabilities from a calibrator fitted without it (fit on
    the other folds): what thresholds may be bounded on. A calibrator scored on the
    rows it was fitted on looks better than it is, most for the flexible methods."""
    chosen = method(method_name, data.classes)
    pooled = np.empty_like(data.logits)
    for train, held_out in KFold(n_splits=folds, shuffle=True, random_state=seed).split(
        data.logits
    ):
        weights = None if data.weights is None else data.weights[train]
        fitted = chosen.fit(data.logits[train], data.labels[train], weights)
        pooled[held_out] = fitted.predict(data.logits[held_out])
    return pooled


def save_fit(result: FitResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")


def load_fit(path: Path) -> FitResult:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
        selection = doc["selection"]
        histogram = doc["histogram"]
        return FitResult(
            calibrator=method(doc["method"]).load(doc["parameters"]),
            selection=None
            if selection is None
            else Selection(
                chosen=selection["chosen"],
                runner_up=selection["runner_up"],
                scores=tuple(Score(**s) for s in selection["scores"]),
                folds=selection["folds"],
                seed=selection["seed"],
            ),
            rows=int(doc["rows"]),
            dataset_fingerprint=doc["dataset_fingerprint"],
            fitted_at=doc["fitted_at"],
            ece_before=float(doc["ece_before"]),
            ece_after=float(doc["ece_after"]),
            histogram_edges=tuple(float(e) for e in histogram["edges"]),
            histogram_counts=tuple(int(c) for c in histogram["counts"]),
            class_counts=tuple(int(c) for c in doc.get("class_counts", ())),
        )
    except OSError as exc:
        raise DataError(str(path), f"cannot read: {exc.strerror}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(str(path), f"not a calibrator fit: {exc}") from exc
