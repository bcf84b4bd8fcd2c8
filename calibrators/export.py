"""Export calibrators as ONNX artefacts under the sidecar's contract
(``sidecar.calibration.artefact``): input ``logits`` float32 [N, C], output
``probabilities`` float32 [N, C], metadata in ``metadata_props``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME, ArtefactMetadata

OPSET = 17


def temperature_graph(temperature: float, metadata: ArtefactMetadata) -> onnx.ModelProto:
    """softmax(logits / T) along the class axis."""
    t = numpy_helper.from_array(np.array(temperature, dtype=np.float32), "temperature")
    nodes = [
        helper.make_node("Div", [INPUT_NAME, "temperature"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], [OUTPUT_NAME], axis=1),
    ]
    return _model(nodes, [t], metadata, f"temperature T={temperature:.6f}")


def _model(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    metadata: ArtefactMetadata,
    doc: str,
) -> onnx.ModelProto:
    classes = metadata.class_count
    graph = helper.make_graph(
        nodes,
        "hitl_calibrator",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", classes])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", classes])],
        initializer=initializers,
        doc_string=doc,
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
