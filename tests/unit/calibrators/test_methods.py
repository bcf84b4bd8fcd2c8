"""Every calibration method against a reference implementation, its ONNX graph
against its numpy reference, and the graph inside the sidecar's runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import check_grad
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression

from calibrators.data import Dataset
from calibrators.export import OnnxPredictor, export_artefact
from calibrators.fit import fit_calibrator, load_fit, save_fit
from calibrators.methods import METHODS, applicable
from calibrators.methods.base import top_label_predict
from calibrators.methods.binning import HistogramBinning
from calibrators.methods.temperature import TemperatureScaling
from calibrators.methods.vector import nll_and_gradient
from calibrators.metrics import ece, nll, softmax
from sidecar.calibration.runtime import load_calibrator
from sidecar.core.policy import CalibratorRef
from tests.calibration_data import REAL_FILES, real, synthetic


class _Logits(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A fitted 'classifier' whose input rows are its own logits, so scikit-learn's
    calibrators see exactly the scores ours do."""

    def fit(self, x: Any, y: Any) -> _Logits:
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: Any) -> Any:
        return np.asarray(x).argmax(axis=1)

    def decision_function(self, x: Any) -> Any:
        x = np.asarray(x)
        return x[:, 1] - x[:, 0] if x.shape[1] == 2 else x


class _Probabilities(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """As _Logits, but exposing only softmax probabilities."""

    def fit(self, x: Any, y: Any) -> _Probabilities:
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: Any) -> Any:
        return np.asarray(x).argmax(axis=1)

    def predict_proba(self, x: Any) -> Any:
        return softmax(x)


def sklearn_calibrated(data: Dataset, method: str, estimator: type) -> Any:
    frozen = FrozenEstimator(estimator().fit(data.logits, data.labels))
    model = CalibratedClassifierCV(frozen, method=method).fit(data.logits, data.labels)
    return model.predict_proba(data.logits)


def test_temperature_matches_scikit_learn() -> None:
    """Our temperature fit gives scikit-learn's temperature-scaled probabilities."""
    data = synthetic(2.0)
    ours = METHODS["temperature"].fit(data.logits, data.labels)
    reference = sklearn_calibrated(data, "temperature", _Logits)
    np.testing.assert_allclose(ours.predict(data.logits), reference, atol=1e-5)


def test_temperature_recovers_the_true_temperature() -> None:
    """On labels drawn at T=2, the fitted T is within 5% of 2."""
    data = synthetic(2.0, rows=20_000)
    fitted = METHODS["temperature"].fit(data.logits, data.labels)
    assert isinstance(fitted, TemperatureScaling)
    assert fitted.temperature == pytest.approx(2.0, rel=0.05)


def test_temperature_lowers_nll_and_ece() -> None:
    """Scaling by the fitted T lowers NLL and ECE on over-confident logits."""
    data = synthetic(2.5, rows=20_000)
    fitted = METHODS["temperature"].fit(data.logits, data.labels)
    before, after = softmax(data.logits), fitted.predict(data.logits)
    assert nll(after, data.labels) < nll(before, data.labels)
    assert ece(after, data.labels) < 0.02 < ece(before, data.labels)


def test_platt_matches_scikit_learn_sigmoid() -> None:
    """Platt scaling equals CalibratedClassifierCV(method="sigmoid") on two classes."""
    data = synthetic(1.7, classes=2)
    ours = METHODS["platt"].fit(data.logits, data.labels)
    reference = sklearn_calibrated(data, "sigmoid", _Logits)
    np.testing.assert_allclose(ours.predict(data.logits), reference, atol=1e-4)


def test_one_vs_rest_isotonic_matches_scikit_learn() -> None:
    """isotonic-ovr equals CalibratedClassifierCV(method="isotonic") on four classes."""
    data = synthetic(1.5, classes=4)
    ours = METHODS["isotonic-ovr"].fit(data.logits, data.labels)
    reference = sklearn_calibrated(data, "isotonic", _Probabilities)
    np.testing.assert_allclose(ours.predict(data.logits), reference, atol=1e-9)


def test_top_label_isotonic_is_isotonic_regression_of_the_top_probability() -> None:
    """The calibrated confidence is scikit-learn's isotonic fit of correctness on the
    top probability, wherever the ceiling and the runner-up floor do not bind."""
    data = synthetic(2.5)
    probs = softmax(data.logits)
    correct = probs.argmax(axis=1) == data.labels
    reference = IsotonicRegression(out_of_bounds="clip").fit(probs.max(axis=1), correct)
    expected = reference.predict(probs.max(axis=1))
    ours = METHODS["isotonic"].fit(data.logits, data.labels).predict(data.logits).max(axis=1)
    free = (expected > 0.5) & (expected < 1.0 - 1e-6)
    assert free.mean() > 0.3  # the floor is at most 0.5, so these rows are unclipped
    np.testing.assert_allclose(ours[free], expected[free], atol=1e-9)


def test_histogram_binning_is_smoothed_bin_accuracy() -> None:
    """Each row's confidence is (hits + 1) / (rows + 2) of its equal-mass bin."""
    data = synthetic(2.5)
    fitted = METHODS["histogram"].fit(data.logits, data.labels)
    assert isinstance(fitted, HistogramBinning)
    probs = softmax(data.logits)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == data.labels
    bounds = [-np.inf, *fitted.edges.tolist(), np.inf]
    for low, high, value in zip(bounds[:-1], bounds[1:], fitted.values, strict=True):
        rows = (confidence > low) & (confidence <= high)
        assert rows.sum() > 100  # equal mass: 4000 rows / 15 bins
        assert value == pytest.approx((correct[rows].sum() + 1) / (rows.sum() + 2))


def test_vector_scaling_gradient_and_optimum() -> None:
    """The analytic gradient matches finite differences, vanishes at the fit, and
    the fit's NLL is no worse than temperature scaling's (which it generalises)."""
    data = synthetic(2.0, classes=4)
    onehot = np.eye(4)[data.labels]
    point = np.random.default_rng(1).normal(1.0, 0.3, 8)
    error = check_grad(
        lambda p: nll_and_gradient(p, data.logits, onehot)[0],
        lambda p: nll_and_gradient(p, data.logits, onehot)[1],
        point,
    )
    assert error < 1e-5
    fitted = METHODS["vector"].fit(data.logits, data.labels)
    params = np.concatenate([fitted.parameters()["weights"], fitted.parameters()["bias"]])
    assert np.abs(nll_and_gradient(params, data.logits, onehot)[1]).max() < 1e-5
    temperature = METHODS["temperature"].fit(data.logits, data.labels)
    vector_nll = nll(fitted.predict(data.logits), data.labels)
    assert vector_nll <= nll(temperature.predict(data.logits), data.labels) + 1e-9


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_every_graph_matches_its_reference_and_loads_in_the_sidecar(
    classes: int, tmp_path: Path
) -> None:
    """For each method: the ONNX artefact equals predict() to 1e-5 on random logits
    (wide and extreme), and the sidecar's runtime verifies, warms and runs it."""
    data = synthetic(1.8, rows=1500, classes=classes, seed=classes)
    rng = np.random.default_rng(classes)
    probe = np.concatenate(
        [rng.normal(0, 4, (400, classes)), rng.normal(0, 40, (100, classes))]
    ).astype(np.float32)
    for method in applicable(classes):
        result = fit_calibrator(data, method.name)
        exported = export_artefact(result, tmp_path / f"{method.name}.onnx")
        ref = CalibratorRef(str(exported.path), exported.sha256, exported.metadata.version)
        runtime = load_calibrator(exported.path, ref)
        expected = result.calibrator.predict(probe)
        np.testing.assert_allclose(runtime(probe), expected, atol=1e-5, err_msg=method.name)
        assert runtime.metadata.method == method.name


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_graph_matches_its_reference_on_real_outputs(name: str, tmp_path: Path) -> None:
    """The same parity on real classifier outputs (10 and 100 classes)."""
    data = real(name)
    fit, probe = data.take(np.arange(0, 3000)), data.logits[3000:5000]
    for method in applicable(data.classes):
        result = fit_calibrator(fit, method.name)
        exported = export_artefact(result, tmp_path / f"{method.name}.onnx")
        np.testing.assert_allclose(
            OnnxPredictor(exported.path).predict(probe),
            result.calibrator.predict(probe.astype(np.float32)),
            atol=1e-5,
            err_msg=method.name,
        )


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 30), st.integers(2, 6)), elements=st.floats(-60, 60)
    ),
    st.floats(0.0, 1.0),
)
def test_top_label_keeps_the_predicted_class_and_sums_to_one(logits: Any, value: float) -> None:
    """Whatever the confidence map says, top-label calibration keeps argmax (up to
    ties in the logits), stays below 1 and returns distributions."""
    out = top_label_predict(logits, lambda p1: np.full_like(p1, value))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    assert (out.max(axis=1) < 1.0).all()
    top = logits.argmax(axis=1)
    assert (out[np.arange(out.shape[0]), top] == out.max(axis=1)).all()
    assert (out.argmax(axis=1) == top).all()


def test_fit_round_trips_through_json(tmp_path: Path) -> None:
    """A saved fit loads back to the same predictions and metadata."""
    data = synthetic(2.0)
    for method in applicable(data.classes):
        result = fit_calibrator(data, method.name)
        save_fit(result, tmp_path / "fit.json")
        json.loads((tmp_path / "fit.json").read_text())
        loaded = load_fit(tmp_path / "fit.json")
        np.testing.assert_array_equal(
            loaded.calibrator.predict(data.logits), result.calibrator.predict(data.logits)
        )
        assert loaded.dataset_fingerprint == result.dataset_fingerprint


def test_auto_selects_temperature_on_temperature_generated_data() -> None:
    """With labels drawn at a known temperature, cross-validated NLL picks a scaling
    method (temperature or its generalisation), and reports the runner-up."""
    result = fit_calibrator(synthetic(2.0, rows=3000), "auto")
    assert result.selection is not None
    assert result.selection.chosen in {"temperature", "vector"}
    assert result.selection.runner_up is not None
    eligible = [s.nll for s in result.selection.scores if not s.excluded]
    assert eligible == sorted(eligible)
    assert result.method == result.selection.chosen


def test_auto_with_a_target_selects_by_what_routing_gets() -> None:
    """Given a Tier-1 target, auto picks the method that automates the largest share
    out of fold with its bound at the target; each method's automation, bound,
    accuracy and class changes are reported; one that changes predicted classes and
    loses accuracy out of fold is never chosen."""
    result = fit_calibrator(synthetic(2.0, rows=3000, spread=6.0), "auto", target=0.9)
    assert result.selection is not None
    scores = {s.method: s for s in result.selection.scores}
    chosen = scores[result.selection.chosen]
    eligible = [s for s in scores.values() if not s.excluded]
    assert chosen.automated == max(s.automated for s in eligible)
    assert chosen.automated > 0
    assert chosen.bound is not None
    assert chosen.bound >= 0.9
    for s in scores.values():
        assert 0.0 <= s.class_changed <= 1.0
        assert 0.0 < s.accuracy <= 1.0
        if s.excluded:
            assert s.class_changed > 0.01
            assert s.method != result.selection.chosen
