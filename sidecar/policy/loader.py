"""Turn a policy document into a snapshot: parse it, load the calibrators it names
(reusing sessions already built for the same sha256), fix each model's labels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from sidecar.calibration.runtime import Calibrator, load_calibrator
from sidecar.core.policy import ModelPolicy, Policy, parse_policy
from sidecar.errors import CalibratorError, PolicyError
from sidecar.policy.snapshot import Snapshot


def read_policy_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError("", f"cannot read policy {path}: {exc.strerror}") from exc


def parse_policy_bytes(data: bytes, name: str) -> Policy:
    """Parse a JSON or YAML policy (JSON is YAML, so one parser reads both)."""
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PolicyError("", f"{name} is not valid YAML or JSON: {exc}") from exc
    return parse_policy(doc)


def build_snapshot(
    policy: Policy,
    base_dir: Path,
    source: str,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Load every calibrator of policy (files relative to base_dir)."""
    reuse: Mapping[str, Calibrator] = {}
    if previous is not None:
        reuse = {
            previous.policy.models[name].calibrator.sha256: calibrator
            for name, calibrator in previous.calibrators.items()
        }
    models: dict[str, ModelPolicy] = {}
    calibrators: dict[str, Calibrator] = {}
    for name, model in policy.models.items():
        ref = model.calibrator
        calibrator = reuse.get(ref.sha256)
        if calibrator is None or calibrator.metadata.version != ref.version:
            try:
                calibrator = load_calibrator(base_dir / ref.file, ref)
            except CalibratorError as exc:
                raise PolicyError(f"models.{name}.calibrator", str(exc)) from exc
        calibrators[name] = calibrator
        models[name] = model.with_labels(_labels(name, model, calibrator))
    policy = Policy(policy.revision, models, policy.issued_at, policy.max_age_seconds)
    counts = {name: c.metadata.class_count for name, c in calibrators.items()}
    return Snapshot(policy, calibrators, counts, source)


def _labels(name: str, model: ModelPolicy, calibrator: Calibrator) -> tuple[str, ...]:
    if model.labels is None:
        return calibrator.metadata.labels
    count = calibrator.metadata.class_count
    if len(model.labels) != count:
        raise PolicyError(
            f"models.{name}.labels",
            f"{len(model.labels)} labels; the calibrator has {count} classes",
        )
    return model.labels
