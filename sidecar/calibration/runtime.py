"""Load, verify, warm and run an ONNX calibrator.

A session is built once per artefact, when a policy arrives, never per request. It
runs on one intra-op thread: a calibrator is a handful of element-wise ops, and on
a 2-core pod the sidecar must not contend with the model server for cores."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME, ArtefactMetadata, parse_metadata
from sidecar.core.policy import CalibratorRef
from sidecar.core.request import FloatArray
from sidecar.errors import CalibratorError

_WARM_ROWS = (1, 8)


class Calibrator(Protocol):
    """Maps logits [N, C] to probabilities [N, C]."""

    @property
    def metadata(self) -> ArtefactMetadata: ...

    def __call__(self, logits: FloatArray) -> FloatArray: ...


class OnnxCalibrator:
    """A verified, warmed onnxruntime session for one artefact.

    A single row (unary Route) runs through an IO binding made once: the logits are
    copied into a bound input buffer and the graph writes into a bound output one,
    which skips the Python-side checks and allocations of ``run`` (a third of a
    one-row call). Calls must not overlap, which they do not: the Router runs on
    one event loop."""

    def __init__(self, session: ort.InferenceSession, metadata: ArtefactMetadata) -> None:
        self._session = session
        self._metadata = metadata
        self._outputs = [OUTPUT_NAME]
        classes = metadata.class_count
        self._row_in = np.zeros((1, classes), dtype=np.float32)
        self._row_out = np.zeros((1, classes), dtype=np.float32)
        self._row = session.io_binding()
        self._row.bind_cpu_input(INPUT_NAME, self._row_in)
        self._row.bind_output(
            OUTPUT_NAME, "cpu", 0, np.float32, list(self._row_out.shape), self._row_out.ctypes.data
        )

    @property
    def metadata(self) -> ArtefactMetadata:
        return self._metadata

    def __call__(self, logits: FloatArray) -> FloatArray:
        if logits.shape == self._row_in.shape:
            self._row_in[...] = logits
            self._session.run_with_iobinding(self._row)
            return self._row_out.copy()
        result: FloatArray = self._session.run(self._outputs, {INPUT_NAME: logits})[0]
        return result


def load_calibrator(path: Path, ref: CalibratorRef) -> OnnxCalibrator:
    """The artefact at path, refused unless its sha256 and version are those the
    policy names and it maps logits to finite probabilities."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CalibratorError(f"cannot read calibrator {path}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.sha256:
        raise CalibratorError(f"{path} has sha256 {digest}; the policy names {ref.sha256}")
    return verify(build_session(data, str(path)), ref)


def build_session(data: bytes, name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise CalibratorError(f"{name} is not a loadable ONNX graph: {exc}") from exc


def verify(session: ort.InferenceSession, ref: CalibratorRef) -> OnnxCalibrator:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise CalibratorError(
            f"graph has inputs {inputs} and outputs {outputs}; "
            f"the contract is {INPUT_NAME!r} -> {OUTPUT_NAME!r}"
        )
    metadata = parse_metadata(session.get_modelmeta().custom_metadata_map)
    if metadata.version != ref.version:
        raise CalibratorError(
            f"artefact declares calibration version {metadata.version!r}; "
            f"the policy names {ref.version!r}"
        )
    calibrator = OnnxCalibrator(session, metadata)
    _warm(calibrator)
    return calibrator


def _warm(calibrator: OnnxCalibrator) -> None:
    """Run the graph once per warm batch size: the first runs allocate, and a graph
    that cannot map logits to probabilities is refused here, not at request time."""
    classes = calibrator.metadata.class_count
    for rows in _WARM_ROWS:
        logits = np.linspace(-3.0, 3.0, rows * classes, dtype=np.float32).reshape(rows, classes)
        try:
            probs = calibrator(logits)
        except Exception as exc:  # onnxruntime's own error types
            raise CalibratorError(f"calibrator fails to run: {exc}") from exc
        if probs.shape != logits.shape:
            raise CalibratorError(f"calibrator maps {logits.shape} to {probs.shape}")
        sums = probs.sum(axis=1)
        if not np.isfinite(probs).all() or not np.allclose(sums, 1.0, atol=1e-4):
            raise CalibratorError("calibrator output is not a probability distribution")
