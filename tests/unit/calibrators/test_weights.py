"""Rows with weights (a feedback dataset's inverse inclusion probabilities): read from
every format and scaled to a mean of 1; a fit with integer weights is the fit on the
rows repeated; and on a sample that keeps every uncertain row but one confident row
in twenty, the weighted fit, ECE and Tier-1 bound stand for the whole population
where the unweighted ones do not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibrators.check import check_thresholds
from calibrators.data import Dataset, check, load_dataset
from calibrators.fit import fit_calibrator
from calibrators.methods import METHODS
from calibrators.metrics import ece, softmax
from calibrators.thresholds import recommend_threshold
from hitl.cli import main
from sidecar.core.thresholds import Thresholds, ThresholdTable
from tests.calibration_data import synthetic


def test_weights_are_read_from_every_format_and_scaled_to_a_mean_of_one(tmp_path: Path) -> None:
    rows = [([0.1, 2.0], 1, 20.0), ([1.5, 0.2], 0, 1.0), ([0.3, 0.4], 1, 1.0)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"logits": z, "label": y, "weight": w}) + "\n" for z, y, w in rows)
    )
    csv = tmp_path / "d.csv"
    csv.write_text(
        "label,weight,logit_0,logit_1\n" + "".join(f"{y},{w},{z[0]},{z[1]}\n" for z, y, w in rows)
    )
    npz = tmp_path / "d.npz"
    np.savez(npz, logits=[z for z, _, _ in rows], labels=[y for _, y, _ in rows],
             weights=[w for _, _, w in rows])  # fmt: skip
    for path in (jsonl, csv, npz):
        data = load_dataset(path)
        assert data.weights is not None
        assert data.weights.tolist() == pytest.approx([60 / 22, 3 / 22, 3 / 22])
    unweighted = load_dataset(npz).take(np.array([0, 1]))
    assert unweighted.weights is not None
    assert unweighted.weights.shape == (2,)
    assert load_dataset(npz).fingerprint() != check("x", *_rows(rows), False).fingerprint()


def _rows(rows: list[Any]) -> tuple[Any, Any, None]:
    return [z for z, _, _ in rows], [y for _, y, _ in rows], None


@pytest.mark.parametrize("name", ["temperature", "vector", "isotonic", "isotonic-ovr"])
def test_integer_weights_fit_as_the_rows_repeated(name: str) -> None:
    data = synthetic(2.0, rows=600, classes=3, seed=11)
    times = np.random.default_rng(4).integers(1, 4, size=data.rows)
    repeated = np.repeat(np.arange(data.rows), times)
    method = METHODS[name]
    weighted = method.fit(data.logits, data.labels, times.astype(np.float64))
    plain = method.fit(data.logits[repeated], data.labels[repeated])
    probe = synthetic(2.0, rows=200, classes=3, seed=12).logits
    assert weighted.predict(probe) == pytest.approx(plain.predict(probe), abs=2e-4)


def population(rows: int = 60_000, seed: int = 8) -> Dataset:
    """Confident rows (top raw probability >= 0.9) over-confident (labels drawn at
    T = 1.6), the others under-confident (T = 0.8): no one temperature fits both."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, size=(rows, 4))
    confident = softmax(logits).max(axis=1) >= 0.9
    probs = np.where(confident[:, None], softmax(logits / 1.6), softmax(logits / 0.8))
    u = rng.uniform(size=(rows, 1))
    labels = (probs.cumsum(axis=1) < u).sum(axis=1).clip(0, 3)
    return check("population", logits, labels, None, probabilities=False)


def sampled(whole: Dataset, share: float = 0.05, seed: int = 9) -> Dataset:
    """Every uncertain row, and each confident one with probability share (weight
    1 / share), as the decision stream samples automated decisions."""
    confident = softmax(whole.logits).max(axis=1) >= 0.9
    drawn = np.random.default_rng(seed).uniform(size=whole.rows) < share
    kept = np.flatnonzero(~confident | drawn)
    weights = np.where(confident[kept], 1.0 / share, 1.0)
    return check("sample", whole.logits[kept], whole.labels[kept], None, False, weights)


def test_a_weighted_sample_stands_for_its_population() -> None:
    whole = population()
    sample = sampled(whole)
    plain = Dataset(sample.logits, sample.labels, None, "sample, unweighted")
    t_whole, t_weighted, t_plain = (
        fit_calibrator(d, "temperature").calibrator.parameters()["temperature"]
        for d in (whole, sample, plain)
    )
    assert abs(t_weighted - t_whole) < abs(t_plain - t_whole) / 3
    hit = softmax(sample.logits).argmax(axis=1) == sample.labels
    accuracy = float((softmax(whole.logits).argmax(axis=1) == whole.labels).mean())
    assert float(np.average(hit, weights=sample.weights)) == pytest.approx(accuracy, abs=0.02)
    assert float(hit.mean()) < accuracy - 0.05


def test_a_weighted_ece_counts_a_row_as_often_as_its_weight() -> None:
    data = synthetic(2.0, rows=800, classes=3, seed=13)
    times = np.random.default_rng(5).integers(1, 5, size=data.rows)
    repeated = np.repeat(np.arange(data.rows), times)
    probs = softmax(data.logits)
    weighted = ece(probs, data.labels, weights=times.astype(np.float64))
    assert weighted == pytest.approx(ece(probs[repeated], data.labels[repeated]), abs=1e-12)


def test_the_bound_and_the_check_count_each_row_with_its_weight() -> None:
    """Threshold shares are the population's, and the bound uses the effective rows:
    fewer than the rows, so it is lower than an unweighted one on the same rows."""
    whole = population()
    sample = sampled(whole)
    conf = softmax(sample.logits).max(axis=1)
    ok = softmax(sample.logits).argmax(axis=1) == sample.labels
    weighted = recommend_threshold(conf, ok, 0.9, 0.95, sample.weights)
    plain = recommend_threshold(conf, ok, 0.9, 0.95)
    assert weighted is not None
    assert plain is not None
    share_whole = float((softmax(whole.logits).max(axis=1) >= weighted.threshold).mean())
    assert weighted.automated_share == pytest.approx(share_whole, abs=0.02)
    assert plain.automated_share < share_whole - 0.1  # the sample under-represents them
    table = ThresholdTable(Thresholds(weighted.threshold, 0.5), {})
    (checked,) = check_thresholds(
        softmax(sample.logits), sample.labels, table, 0.9, 0.95, None, sample.weights
    )
    assert checked.automated_share == pytest.approx(weighted.automated_share, abs=1e-9)
    assert checked.tier1_accuracy == pytest.approx(weighted.accuracy, abs=1e-9)


def test_fit_and_thresholds_report_that_they_weighed_the_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sampled(population(rows=20_000))
    path = tmp_path / "sample.npz"
    assert sample.weights is not None
    np.savez(path, logits=sample.logits, labels=sample.labels, weights=sample.weights)
    code = main(["calibrate", "fit", "--data", str(path), "--method", "temperature",
                 "--out", str(tmp_path / "fit.json")])  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["weighted"] is True
    assert 0 < summary["effective_rows"] < summary["rows"]
    code = main(["calibrate", "thresholds", "--data", str(path), "--target", "0.9",
                 "--low-target", "0.5", "--out", str(tmp_path / "fragment.yaml")])  # fmt: skip
    thresholds = json.loads(capsys.readouterr().out)
    assert code == 0
    assert thresholds["weighted"] is True  # the bound says what it counted
    assert thresholds["effective_rows"] == summary["effective_rows"]


def test_the_drift_reference_counts_rows_with_their_weights() -> None:
    """A sampled dataset's reference histograms stand for the traffic, not the sample:
    a row counts its weight, the weights scaled to a mean of 1."""
    from calibrators.metrics import class_counts, confidence_histogram

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45]])
    weights = np.array([7.0, 1.0, 1.0, 1.0])  # scaled: 2.8, 0.4, 0.4, 0.4
    _, counts = confidence_histogram(probs, bins=2, weights=weights)
    assert counts == [0, 4]  # every top confidence is above 0.5
    assert class_counts(probs, weights) == [4, 0]  # 3.6 and 0.4
    assert class_counts(probs) == [3, 1]
