"""The ONNX calibrator runtime: parity with numpy, and every refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from calibrators.methods.temperature import TemperatureScaling
from sidecar.calibration.artefact import CLASS_COUNT, LABELS, VERSION, parse_metadata
from sidecar.calibration.runtime import load_calibrator
from sidecar.core.policy import CalibratorRef
from sidecar.errors import CalibratorError
from tests.artefacts import (
    CLASSES,
    metadata,
    naive_softmax_artefact,
    sha256_of,
    temperature_artefact,
)


def test_temperature_graph_matches_numpy(tmp_path: Path) -> None:
    """The exported graph equals softmax(z / T) to 1e-5 on random logits."""
    sha = temperature_artefact(tmp_path / "t.onnx", temperature=2.5)
    calibrator = load_calibrator(tmp_path / "t.onnx", CalibratorRef("t.onnx", sha, "t-v1"))
    logits = np.random.default_rng(7).normal(0, 6, size=(500, CLASSES)).astype(np.float32)
    np.testing.assert_allclose(
        calibrator(logits), TemperatureScaling(2.5, logits.shape[1]).predict(logits), atol=1e-5
    )
    assert calibrator.metadata.labels == ("cat", "dog", "fox")


def test_sha256_mismatch_refused(tmp_path: Path) -> None:
    """An artefact whose bytes differ from the policy's sha256 is refused."""
    temperature_artefact(tmp_path / "t.onnx")
    with pytest.raises(CalibratorError, match="sha256"):
        load_calibrator(tmp_path / "t.onnx", CalibratorRef("t.onnx", "0" * 64, "t-v1"))


def test_version_mismatch_refused(tmp_path: Path) -> None:
    """An artefact declaring another calibration version than the policy is refused."""
    sha = temperature_artefact(tmp_path / "t.onnx", version="t-v2")
    with pytest.raises(CalibratorError, match="version"):
        load_calibrator(tmp_path / "t.onnx", CalibratorRef("t.onnx", sha, "t-v1"))


def test_missing_file_refused(tmp_path: Path) -> None:
    """A missing artefact is a CalibratorError, not an OSError."""
    with pytest.raises(CalibratorError, match="cannot read"):
        load_calibrator(tmp_path / "nope.onnx", CalibratorRef("nope.onnx", "0" * 64, "v"))


def test_corrupt_bytes_refused(tmp_path: Path) -> None:
    """Bytes that are not an ONNX graph are refused (sha256 matching them)."""
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a graph at all")
    with pytest.raises(CalibratorError, match="not a loadable ONNX graph"):
        load_calibrator(path, CalibratorRef("bad.onnx", sha256_of(path), "v"))


def test_missing_metadata_refused(tmp_path: Path) -> None:
    """A graph without the contract's metadata is refused, naming the missing keys."""
    path = tmp_path / "t.onnx"
    temperature_artefact(path)
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(CalibratorError, match="lacks"):
        load_calibrator(path, CalibratorRef("t.onnx", sha256_of(path), "t-v1"))


def test_naive_graph_loads_but_overflows_at_run_time(tmp_path: Path) -> None:
    """The unshifted softmax passes warm-up and yields NaN on large logits (fallback fodder)."""
    sha = naive_softmax_artefact(tmp_path / "n.onnx")
    calibrator = load_calibrator(tmp_path / "n.onnx", CalibratorRef("n.onnx", sha, "naive-v1"))
    out = calibrator(np.array([[100.0, 0.0, 0.0]], dtype=np.float32))
    assert np.isnan(out).any()


def test_metadata_round_trip_and_checks() -> None:
    """to_props and parse_metadata agree; inconsistent metadata is refused."""
    props = metadata().to_props()
    assert parse_metadata(props) == metadata()
    with pytest.raises(CalibratorError, match="labels"):
        parse_metadata({**props, LABELS: '["a"]'})
    with pytest.raises(CalibratorError, match="malformed"):
        parse_metadata({**props, CLASS_COUNT: "three"})
    assert parse_metadata({**props, VERSION: "x"}).version == "x"
