"""Export fitted calibrators as ONNX artefacts under the sidecar's contract
(``sidecar.calibration.artefact``): input ``logits`` float32 [N, C], output
``probabilities`` float32 [N, C], metadata in ``metadata_props``. And run an
exported artefact, so what is evaluated is exactly what the sidecar will run."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from calibrators.fit import FitResult
from calibrators.methods import Fitted
from calibrators.metrics import Floats
from sidecar.calibration.artefact import (
    DATASET_FINGERPRINT,
    INPUT_NAME,
    OUTPUT_NAME,
    ArtefactMetadata,
)
from sidecar.calibration.runtime import build_session
from sidecar.errors import CalibratorError, DataError

OPSET = 17
# Rows per session.run when evaluating a file: bounds the memory of graphs whose
# intermediate tensors grow with rows x classes x breakpoints (isotonic-ovr).
EVALUATION_CHUNK = 256


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    metadata: ArtefactMetadata


def to_onnx(fitted: Fitted, metadata: ArtefactMetadata) -> onnx.ModelProto:
    g = fitted.graph()
    classes = metadata.class_count
    graph = helper.make_graph(
        g.nodes,
        "hitl_calibrator",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", classes])],
        initializer=g.initializers,
        doc_string=f"{fitted.method} calibrator, version {metadata.version}",
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hitl-calibrators"
    )
    model.ir_version = 8  # readable by every onnxruntime the sidecar supports
    helper.set_model_props(model, metadata.to_props())
    onnx.checker.check_model(model, full_check=True)
    return model


def write_artefact(model: onnx.ModelProto, path: Path) -> str:
    """Write atomically; return the sha256 the policy must name."""
    data = model.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def export_artefact(
    result: FitResult, out: Path, version: str | None = None, labels: list[str] | None = None
) -> Exported:
    classes = result.calibrator.class_count
    if labels is not None and len(labels) != classes:
        raise DataError("--labels", f"{len(labels)} labels for a {classes}-class calibrator")
    metadata = ArtefactMetadata(
        method=result.method,
        version=version or result.default_version(),
        class_count=classes,
        labels=tuple(labels or [str(i) for i in range(classes)]),
        fitted_at=result.fitted_at,
        dataset_fingerprint=result.dataset_fingerprint,
        ece_before=result.ece_before,
        ece_after=result.ece_after,
        histogram_edges=result.histogram_edges,
        histogram_counts=result.histogram_counts,
        class_counts=result.class_counts,
    )
    return Exported(out, write_artefact(to_onnx(result.calibrator, metadata), out), metadata)


class OnnxPredictor:
    """An exported artefact as a predict function, run by the sidecar's session setup."""

    def __init__(self, path: Path) -> None:
        try:
            self._session = build_session(path.read_bytes(), str(path))
        except OSError as exc:
            raise DataError(str(path), f"cannot read: {exc.strerror}") from exc
        except CalibratorError as exc:
            raise DataError(str(path), str(exc)) from exc
        self.class_count = int(self._session.get_inputs()[0].shape[1])
        props = self._session.get_modelmeta().custom_metadata_map
        self.dataset_fingerprint = str(props.get(DATASET_FINGERPRINT, ""))

    def predict(self, logits: npt.ArrayLike) -> Floats:
        z = np.asarray(logits, dtype=np.float32)
        parts = [
            self._session.run([OUTPUT_NAME], {INPUT_NAME: z[i : i + EVALUATION_CHUNK]})[0]
            for i in range(0, z.shape[0], EVALUATION_CHUNK)
        ]
        out: Floats = np.concatenate(parts).astype(np.float64)
        return out
