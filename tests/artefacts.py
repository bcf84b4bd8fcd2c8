"""Build real calibrator artefacts and policy files for tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper

from calibrators.export import to_onnx, write_artefact
from calibrators.methods.temperature import TemperatureScaling
from sidecar.calibration.artefact import INPUT_NAME, OUTPUT_NAME, ArtefactMetadata

CLASSES = 3
LABELS = ("cat", "dog", "fox")


def metadata(
    version: str = "t-v1", classes: int = CLASSES, method: str = "temperature"
) -> ArtefactMetadata:
    return ArtefactMetadata(
        method=method,
        version=version,
        class_count=classes,
        labels=LABELS if classes == CLASSES else tuple(f"c{i}" for i in range(classes)),
        fitted_at="2026-11-21T00:00:00+00:00",
        dataset_fingerprint="0" * 64,
        ece_before=0.1,
        ece_after=0.01,
        histogram_edges=(0.0, 0.5, 1.0),
        histogram_counts=(3, 7),
        class_counts=(10,) * classes,
    )


def temperature_artefact(path: Path, temperature: float = 1.0, version: str = "t-v1") -> str:
    """Write a temperature-scaling artefact; return its sha256."""
    model = to_onnx(TemperatureScaling(temperature, CLASSES), metadata(version))
    return write_artefact(model, path)


def naive_softmax_artefact(path: Path, version: str = "naive-v1") -> str:
    """exp(x) / sum(exp(x)) without the max shift: fine for small logits, NaN
    (inf / inf) once a logit passes about 89, which float32 exp cannot hold."""
    nodes = [
        helper.make_node("Exp", [INPUT_NAME], ["e"]),
        helper.make_node("ReduceSum", ["e", "axes"], ["s"], keepdims=1),
        helper.make_node("Div", ["e", "s"], [OUTPUT_NAME]),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        nodes,
        "naive",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", CLASSES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", CLASSES])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata(version, method="naive").to_props())
    onnx.checker.check_model(model)
    return write_artefact(model, path)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def policy_doc(
    sha256: str, path: str = "cal.onnx", version: str = "t-v1", **model: Any
) -> dict[str, Any]:
    """Revision 1 of a policy file with one model 'm' whose calibrator is at path."""
    return {"revision": 1, **one_model({"path": path, "sha256": sha256, "version": version}, model)}


def one_model(calibrator: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """``models`` with one model 'm': calibrator, default thresholds, and model on top."""
    body: dict[str, Any] = {"calibrator": calibrator, "thresholds": {"t_high": 0.9, "t_low": 0.5}}
    return {"models": {"m": {**body, **model}}}


def write_policy(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(path)


def confident_logits(cls: int, strength: float = 8.0) -> list[float]:
    """Logits whose softmax puts most mass (about 0.999 at strength 8) on cls."""
    logits = np.zeros(CLASSES, dtype=np.float32)
    logits[cls] = strength
    return [float(x) for x in logits]
