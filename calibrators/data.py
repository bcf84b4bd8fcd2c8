"""Read labelled model outputs for the offline tools, and refuse unusable ones.

Formats (chosen by suffix):

- ``.npz``: scores under ``logits``, or ``predictions`` / ``probabilities``
  (softmax outputs); labels under ``labels``, ``ground_truth`` or ``y``; optional
  ``domains`` (strings) and ``weights``.
- ``.npy``: the scores; the labels (and optional domains) in sibling ``.npy`` files
  named by ``labels_path`` and ``domains_path``.
- ``.csv``: a header with ``label``, optional ``domain`` and ``weight``, and
  ``logit_0`` .. ``logit_{C-1}`` or ``prob_0`` .. ``prob_{C-1}``.
- ``.jsonl``: one object per line with ``logits`` or ``probabilities`` (a list),
  ``label`` (an integer) and optional ``domain`` and ``weight``: the rows a
  feedback dataset holds (``hitl feedback dataset build``).

A row's weight (positive, finite; on every row or on none) is how many rows of the
population it stands for, as a sampled dataset's inverse inclusion probability:
fits, scores and bounds count each row with it.

Probabilities become logits as log(p) (p clipped at 1e-30): every method here is
defined on logits, and temperature, vector and isotonic scaling give the same
result on log(p) as on the logits up to a per-row constant."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibrators.metrics import Floats, Ints, unit_mean
from sidecar.errors import DataError

LOGIT_KEYS = ("logits",)
PROBABILITY_KEYS = ("predictions", "probabilities")
LABEL_KEYS = ("labels", "ground_truth", "y")
DOMAIN_KEYS = ("domains", "domain")
WEIGHT_KEYS = ("weights", "weight")
PROBABILITY_FLOOR = 1e-30
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Dataset:
    """Logits [N, C] float64, labels [N] int64 in [0, C), optional domains [N] and
    row weights [N] (positive, scaled to a mean of 1; None: every row counts once)."""

    logits: Floats
    labels: Ints
    domains: npt.NDArray[np.str_] | None
    source: str
    weights: Floats | None = None

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def classes(self) -> int:
        return int(self.logits.shape[1])

    def fingerprint(self) -> str:
        """sha256 of the float32 logits, int64 labels and float64 weights (when there
        are weights): names the fitting data."""
        digest = hashlib.sha256(np.ascontiguousarray(self.logits, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if self.weights is not None:
            digest.update(np.ascontiguousarray(self.weights, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def take(self, rows: npt.NDArray[np.int64]) -> Dataset:
        domains = None if self.domains is None else self.domains[rows]
        weights = None if self.weights is None else self.weights[rows]
        return Dataset(self.logits[rows], self.labels[rows], domains, self.source, weights)


def load_dataset(
    path: Path, labels_path: Path | None = None, domains_path: Path | None = None
) -> Dataset:
    """The dataset at path, checked; DataError names what is wrong."""
    if not path.is_file():
        raise DataError(str(path), "no such file")
    suffix = path.suffix.lower()
    readers = {".npz": _read_npz, ".csv": _read_csv, ".jsonl": _read_jsonl}
    if suffix == ".npy":
        raw = _read_npy(path, labels_path, domains_path)
    elif suffix in readers:
        raw = readers[suffix](path)
    else:
        raise DataError(str(path), "unknown format; use .npz, .npy, .csv or .jsonl")
    return check(str(path), *raw)


# scores, labels, domains, scores are probabilities, weights
Raw = tuple[Any, Any, Any, bool, Any]


def _read_npz(path: Path) -> Raw:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(str(path), f"not a readable .npz: {exc or 'empty file'}") from exc
    logits = _first(arrays, LOGIT_KEYS)
    probs = _first(arrays, PROBABILITY_KEYS)
    if logits is None and probs is None:
        raise DataError(str(path), f"holds none of {', '.join(LOGIT_KEYS + PROBABILITY_KEYS)}")
    if logits is not None and probs is not None:
        raise DataError(str(path), "holds both logits and probabilities; keep one of them")
    if logits is not None and looks_like_probabilities(logits):
        key = next(k for k in LOGIT_KEYS if k in arrays)
        raise DataError(
            str(path),
            f"{key!r} holds probabilities (every row in [0, 1], summing to 1): store them"
            " under 'probabilities', or they would be softmaxed a second time",
        )
    labels = _first(arrays, LABEL_KEYS)
    if labels is None:
        raise DataError(str(path), f"holds none of {', '.join(LABEL_KEYS)}")
    domains = _first(arrays, DOMAIN_KEYS)
    weights = _first(arrays, WEIGHT_KEYS)
    return (probs if logits is None else logits), labels, domains, logits is None, weights


def _first(arrays: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((arrays[k] for k in keys if k in arrays), None)


def _read_npy(path: Path, labels_path: Path | None, domains_path: Path | None) -> Raw:
    if labels_path is None:
        raise DataError(str(path), "a .npy of scores needs its labels .npy (--labels)")
    scores = _load_npy(path)
    labels = _load_npy(labels_path)
    domains = None if domains_path is None else _load_npy(domains_path)
    return scores, labels, domains, looks_like_probabilities(scores), None


def _load_npy(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(str(path), f"not a readable .npy: {exc}") from exc


def looks_like_probabilities(scores: Any) -> bool:
    """Every entry in [0, 1] and every row summing to 1: softmax output, not logits."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.size == 0 or not np.isfinite(values).all():
        return False
    in_range = bool(((values >= 0.0) & (values <= 1.0)).all())
    return in_range and bool(np.allclose(values.sum(axis=1), 1.0, atol=SUM_TOLERANCE))


_COLUMN = re.compile(r"^(logit|prob)_(\d+)$")


def _read_csv(path: Path) -> Raw:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        kinds = {m.group(1) for m in map(_COLUMN.match, header) if m}
        if len(kinds) != 1 or "label" not in header:
            raise DataError(
                str(path), "header needs 'label' and logit_0.. or prob_0.. columns (not both)"
            )
        kind = kinds.pop()
        columns = sorted(
            (c for c in header if _COLUMN.match(c)), key=lambda c: int(c.split("_")[1])
        )
        if [int(c.split("_")[1]) for c in columns] != list(range(len(columns))):
            raise DataError(str(path), f"{kind}_ columns must run 0..{len(columns) - 1}")
        scores, labels, domains, weights = [], [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                scores.append([float(row[c]) for c in columns])
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}:{line}", f"a {kind} value is not a number") from exc
            labels.append(_label(row.get("label"), f"{path}:{line}"))
            domains.append(row.get("domain") or "")
            if "weight" in header:
                weights.append(_weight(row.get("weight"), f"{path}:{line}"))
    has_domain = "domain" in header
    weighed = weights if "weight" in header else None
    return scores, labels, (domains if has_domain else None), kind == "prob", weighed


def _read_jsonl(path: Path) -> Raw:
    scores, labels, domains, weights = [], [], [], list[float]()
    kind = None
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path}:{line}"
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(where, f"not JSON: {exc.msg}") from exc
            if not isinstance(item, dict):
                raise DataError(where, "each line must be a JSON object")
            this = "logits" if "logits" in item else "probabilities"
            if this not in item or not isinstance(item[this], list):
                raise DataError(where, "needs a 'logits' or 'probabilities' list")
            if kind not in (None, this):
                raise DataError(where, f"mixes 'logits' and 'probabilities' (earlier: {kind})")
            kind = this
            scores.append(item[this])
            labels.append(_label(item.get("label"), where))
            domains.append(str(item.get("domain", "")))
            if ("weight" in item) != bool(weights) and len(scores) > 1:
                given = "a" if "weight" in item else "no"
                raise DataError(where, f"has {given} 'weight', unlike the rows before it")
            if "weight" in item:
                weights.append(_weight(item["weight"], where))
    has_domain = any(domains)
    weighed = weights or None
    return scores, labels, (domains if has_domain else None), kind == "probabilities", weighed


def _label(value: Any, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(where, f"label {value!r} is not an integer") from None
    if not number.is_integer():
        raise DataError(where, f"label {value!r} is not an integer")
    return int(number)


def _weight(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(where, f"weight {value!r} is not a number") from None
    return number


def check(
    source: str,
    scores: Any,
    labels: Any,
    domains: Any,
    probabilities: bool,
    weights: Any = None,
) -> Dataset:
    """Turn raw arrays into a Dataset, or say exactly why not."""
    try:
        values = np.asarray(scores, dtype=np.float64)
    except ValueError as exc:
        raise DataError(source, f"scores are not a numeric [rows, classes] table: {exc}") from exc
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:  # a column of labels, as many tools save them
        y = y[:, 0]
    if values.size == 0 or y.size == 0:
        raise DataError(source, "no rows")
    if values.ndim != 2 or values.shape[1] < 2:
        raise DataError(source, f"scores must be [rows, classes >= 2], got shape {values.shape}")
    if y.ndim != 1 or y.shape[0] != values.shape[0]:
        raise DataError(
            source, f"{values.shape[0]} rows of scores but labels of shape {tuple(y.shape)}"
        )
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise DataError(source, f"{bad.size} rows hold NaN or infinity (first: row {bad[0]})")
    whole = np.issubdtype(y.dtype, np.floating) and bool(np.all(np.mod(y, 1) == 0))
    if not (np.issubdtype(y.dtype, np.integer) or whole):
        raise DataError(source, "labels must be integers (class indices)")
    y = y.astype(np.int64)
    classes = values.shape[1]
    _refuse_rows(source, (y < 0) | (y >= classes), f"labels outside 0..{classes - 1}", "label", y)
    if probabilities:
        values = _probabilities_to_logits(source, values)
    names = None
    if domains is not None:
        names = np.asarray(domains).astype(str)
        if names.shape != y.shape:
            raise DataError(source, f"{y.shape[0]} labels but domains of shape {names.shape}")
    return Dataset(values, y, names, source, _weights(source, weights, y.shape[0]))


def _weights(source: str, weights: Any, rows: int) -> Floats | None:
    """The rows' weights, checked and scaled to a mean of 1 (None: none given)."""
    if weights is None:
        return None
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(source, f"weights are not numbers: {exc}") from exc
    if w.shape != (rows,):
        raise DataError(source, f"{rows} labels but weights of shape {tuple(w.shape)}")
    bad = ~np.isfinite(w) | (w <= 0.0)
    _refuse_rows(source, bad, "weights are not positive finite numbers", "weight", w)
    return unit_mean(w)


def _refuse_rows(source: str, bad: Any, problem: str, name: str, values: Any) -> None:
    """DataError naming how many rows have the problem and the first of them."""
    rows = np.flatnonzero(bad)
    if rows.size:
        first = int(rows[0])
        raise DataError(
            source, f"{rows.size} {problem} (first: row {first}, {name} {values[first]})"
        )


def _probabilities_to_logits(source: str, probs: Floats) -> Floats:
    if ((probs < 0.0) | (probs > 1.0)).any():
        raise DataError(source, "probabilities must lie in [0, 1]")
    sums = probs.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if off.size:
        raise DataError(
            source,
            f"{off.size} probability rows do not sum to 1 (row {off[0]}: {sums[off[0]]:.4f})",
        )
    logits: Floats = np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0))
    return logits


def load_outputs(path: Path, classes: int) -> Floats:
    """Unlabelled model outputs (what production sent the sidecar), as logits: an .npz
    with ``logits`` or ``probabilities`` (no labels needed), or an .npy of scores."""
    if not path.is_file():
        raise DataError(str(path), "no such file")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(str(path), f"not a readable .npz: {exc or 'empty file'}") from exc
        logits, probs = _first(arrays, LOGIT_KEYS), _first(arrays, PROBABILITY_KEYS)
        if (logits is None) == (probs is None):
            raise DataError(str(path), "needs exactly one of logits and probabilities")
        scores, probabilities = (probs, True) if logits is None else (logits, False)
    elif path.suffix.lower() == ".npy":
        scores = _load_npy(path)
        probabilities = looks_like_probabilities(scores)
    else:
        raise DataError(str(path), "unlabelled outputs must be .npz or .npy")
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] != classes:
        raise DataError(str(path), f"scores must be [rows, {classes}], got {values.shape}")
    if not np.isfinite(values).all():
        raise DataError(str(path), "holds NaN or infinity")
    return _probabilities_to_logits(str(path), values) if probabilities else values
