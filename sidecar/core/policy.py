"""The policy document: parsed, validated and compiled into immutable objects.

Parsing is pure (a mapping in, a ``Policy`` out); reading the file and loading the
calibrators it names happen in ``sidecar.policy``. Every error names the field by
its path, for example ``models.digits.domains.eu.t_high: must be in [0, 1]``.
The schema is documented in docs/policy.md."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sidecar.core.drift import DriftAction, DriftPolicy
from sidecar.core.experiments import ATTRIBUTE_PREFIX, Arm, Experiment
from sidecar.core.rules import OPS, SET_OPS, SIGNAL_FIELDS, CompiledRule, Condition, Rule
from sidecar.core.sampling import AuditSampler
from sidecar.core.thresholds import Thresholds, ThresholdTable, UnknownDomain
from sidecar.errors import PolicyError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


@dataclass(frozen=True, slots=True)
class CalibratorRef:
    """Which artefact a model runs: its sha256, the calibration version its metadata
    must declare, and either a path (relative to the policy file) or, in a policy
    from the registry, the name it is stored under there (fetched by sha256)."""

    path: str
    sha256: str
    version: str
    name: str = ""

    @property
    def file(self) -> str:
        """Where the artefact is, relative to the policy's base directory: its path,
        or ``<sha256>.onnx`` for a registry artefact."""
        return self.path or f"{self.sha256}.onnx"


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """Everything the core needs to decide for one model, compiled."""

    name: str
    calibrator: CalibratorRef
    thresholds: ThresholdTable
    labels: tuple[str, ...] | None = None
    rules: tuple[Rule, ...] = ()
    experiment: Experiment | None = None
    audit: AuditSampler = field(default_factory=lambda: AuditSampler(0.0, ""))
    target_tier1_accuracy: float | None = None
    max_ece: float | None = None
    drift: DriftPolicy | None = None
    compiled_rules: tuple[CompiledRule, ...] = ()

    def with_labels(self, labels: tuple[str, ...]) -> ModelPolicy:
        """This policy with its class labels fixed and its rules compiled for them."""
        compiled = tuple(rule.compile(labels) for rule in self.rules)
        return replace(self, labels=labels, compiled_rules=compiled)


@dataclass(frozen=True, slots=True)
class Policy:
    """A revision of the routing policy for every model a sidecar serves."""

    revision: int
    models: Mapping[str, ModelPolicy]
    issued_at: float | None = None
    max_age_seconds: float | None = None

    def with_audit_key(self, key: bytes) -> Policy:
        """This policy, its audit samples drawn with the deployment's secret key."""
        models = {
            name: replace(model, audit=replace(model.audit, key=key))
            for name, model in self.models.items()
        }
        return replace(self, models=models)

    def is_stale(self, now: float) -> bool:
        """Older than max_age_seconds (measured from issued_at)."""
        if self.max_age_seconds is None or self.issued_at is None:
            return False
        return now - self.issued_at > self.max_age_seconds


def parse_policy(doc: object) -> Policy:
    """Validate a policy document (as loaded from JSON or YAML) and compile it."""
    root = _mapping(doc, "")
    _known(root, "", {"revision", "issued_at", "max_age_seconds", "models"})
    revision = _integer(root.get("revision"), "revision", minimum=1)
    issued_at = _timestamp(root.get("issued_at"), "issued_at")
    max_age = root.get("max_age_seconds")
    if max_age is not None:
        max_age = _number(max_age, "max_age_seconds", 1.0, math.inf)
        if issued_at is None:
            raise PolicyError("issued_at", "required when max_age_seconds is set")
    models_doc = _mapping(root.get("models"), "models")
    if not models_doc:
        raise PolicyError("models", "must name at least one model")
    models = {
        _name(name, "models"): _model(str(name), body, f"models.{name}")
        for name, body in models_doc.items()
    }
    return Policy(revision, models, issued_at, max_age)


def _model(name: str, body: object, path: str) -> ModelPolicy:
    doc = _mapping(body, path)
    _known(
        doc,
        path,
        {
            "calibrator",
            "labels",
            "thresholds",
            "domains",
            "rules",
            "experiment",
            "audit_sample_rate",
            "target_tier1_accuracy",
            "unknown_domain",
            "max_ece",
            "drift",
        },
    )
    unknown = _unknown_domain(doc.get("unknown_domain", "strictest"), f"{path}.unknown_domain")
    labels = doc.get("labels")
    if labels is not None:
        labels = tuple(
            _string(label, f"{path}.labels[{i}]")
            for i, label in enumerate(_list(labels, f"{path}.labels"))
        )
    target = doc.get("target_tier1_accuracy")
    return ModelPolicy(
        name=name,
        calibrator=_calibrator(doc.get("calibrator"), f"{path}.calibrator"),
        thresholds=_table(doc, path, unknown),
        labels=labels,
        rules=_rules(doc.get("rules", []), f"{path}.rules"),
        experiment=_experiment(doc.get("experiment"), f"{path}.experiment", name, unknown),
        audit=AuditSampler(
            _number(doc.get("audit_sample_rate", 0.0), f"{path}.audit_sample_rate", 0.0, 1.0),
            name,
        ),
        target_tier1_accuracy=None
        if target is None
        else _number(target, f"{path}.target_tier1_accuracy", 0.0, 1.0),
        max_ece=None
        if doc.get("max_ece") is None
        else _number(doc["max_ece"], f"{path}.max_ece", 0.0, 1.0),
        drift=_drift(doc.get("drift"), f"{path}.drift"),
    )


MIN_DRIFT_WINDOW, MAX_DRIFT_WINDOW = 50, 1_000_000


def _drift(body: object, path: str) -> DriftPolicy | None:
    if body is None:
        return None
    doc = _mapping(body, path)
    _known(doc, path, {"window", "psi_alarm", "psi_recover", "action"})
    window = _integer(doc.get("window"), f"{path}.window", minimum=MIN_DRIFT_WINDOW)
    if window > MAX_DRIFT_WINDOW:
        raise PolicyError(f"{path}.window", f"must be at most {MAX_DRIFT_WINDOW}")
    alarm = _number(doc.get("psi_alarm"), f"{path}.psi_alarm", 0.0, 100.0)
    if alarm <= 0:
        raise PolicyError(f"{path}.psi_alarm", "must be above 0")
    recover = _number(doc.get("psi_recover", alarm / 2), f"{path}.psi_recover", 0.0, alarm)
    if recover >= alarm:
        raise PolicyError(f"{path}.psi_recover", f"must be below psi_alarm {alarm:g}")
    actions = [a.value for a in DriftAction]
    action = doc.get("action", DriftAction.ALERT.value)
    if action not in actions:
        raise PolicyError(f"{path}.action", f"must be one of {', '.join(actions)}, got {action!r}")
    return DriftPolicy(window, alarm, recover, DriftAction(action))


def _calibrator(body: object, path: str) -> CalibratorRef:
    doc = _mapping(body, path)
    _known(doc, path, {"path", "name", "sha256", "version"})
    sha = _string(doc.get("sha256"), f"{path}.sha256").lower()
    if not _SHA256.match(sha):
        raise PolicyError(f"{path}.sha256", "must be 64 hexadecimal digits")
    if ("path" in doc) == ("name" in doc):
        raise PolicyError(f"{path}.path", "give either path (a file) or name (in the registry)")
    return CalibratorRef(
        path=_string(doc["path"], f"{path}.path") if "path" in doc else "",
        sha256=sha,
        version=_string(doc.get("version"), f"{path}.version"),
        name=_name(doc["name"], f"{path}.name") if "name" in doc else "",
    )


def _table(doc: Mapping[str, Any], path: str, unknown: UnknownDomain) -> ThresholdTable:
    default = _thresholds(doc.get("thresholds"), f"{path}.thresholds")
    domains = _mapping(doc.get("domains", {}), f"{path}.domains")
    return ThresholdTable(
        default,
        {
            _name(domain, f"{path}.domains"): _thresholds(body, f"{path}.domains.{domain}")
            for domain, body in domains.items()
        },
        unknown,
    )


def _unknown_domain(value: object, path: str) -> UnknownDomain:
    choices = [u.value for u in UnknownDomain]
    if value not in choices:
        raise PolicyError(path, f"must be one of {', '.join(choices)}, got {value!r}")
    return UnknownDomain(value)


def _thresholds(body: object, path: str) -> Thresholds:
    doc = _mapping(body, path)
    _known(doc, path, {"t_high", "t_low", "paused"})
    t_high = _number(doc.get("t_high"), f"{path}.t_high", 0.0, 1.0)
    t_low = _number(doc.get("t_low"), f"{path}.t_low", 0.0, 1.0)
    if t_low > t_high:
        raise PolicyError(f"{path}.t_low", f"{t_low} is above t_high {t_high}")
    paused = doc.get("paused", False)
    if not isinstance(paused, bool):
        raise PolicyError(f"{path}.paused", "must be true or false")
    return Thresholds(t_high, t_low, paused)


def _rules(body: object, path: str) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(body, path)):
        where = f"{path}[{i}]"
        doc = _mapping(item, where)
        _known(doc, where, {"id", "when"})
        rule_id = _name(doc.get("id"), f"{where}.id")
        if rule_id in seen:
            raise PolicyError(f"{where}.id", f"duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        conditions = _list(doc.get("when"), f"{where}.when")
        if not conditions:
            raise PolicyError(f"{where}.when", "must hold at least one condition")
        rules.append(
            Rule(
                rule_id,
                tuple(_condition(c, f"{where}.when[{j}]") for j, c in enumerate(conditions)),
            )
        )
    return tuple(rules)


def _condition(body: object, path: str) -> Condition:
    doc = _mapping(body, path)
    _known(doc, path, {"field", "op", "value"})
    name = _string(doc.get("field"), f"{path}.field")
    if not (name.startswith(ATTRIBUTE_PREFIX) and len(name) > len(ATTRIBUTE_PREFIX)) and (
        name not in SIGNAL_FIELDS
    ):
        raise PolicyError(
            f"{path}.field",
            f"{name!r} is neither attributes.<name> nor one of {sorted(SIGNAL_FIELDS)}",
        )
    op = _string(doc.get("op"), f"{path}.op")
    if op not in OPS:
        raise PolicyError(f"{path}.op", f"{op!r} is not one of {sorted(OPS)}")
    raw = doc.get("value")
    value: str | float | tuple[str | float, ...]
    if op in SET_OPS:
        value = tuple(
            _scalar(v, f"{path}.value[{k}]") for k, v in enumerate(_list(raw, f"{path}.value"))
        )
    elif op in ("eq", "ne"):
        value = _scalar(raw, f"{path}.value")
    else:
        value = _number(raw, f"{path}.value", -math.inf, math.inf)
    return Condition(name, op, value)


def _experiment(body: object, path: str, model: str, unknown: UnknownDomain) -> Experiment | None:
    if body is None:
        return None
    doc = _mapping(body, path)
    _known(doc, path, {"name", "unit", "arms"})
    name = _name(doc.get("name"), f"{path}.name")
    unit = _string(doc.get("unit", "request_id"), f"{path}.unit")
    if unit != "request_id" and not unit.startswith(ATTRIBUTE_PREFIX):
        raise PolicyError(f"{path}.unit", "must be request_id or attributes.<name>")
    arms: list[Arm] = []
    for i, item in enumerate(_list(doc.get("arms"), f"{path}.arms")):
        where = f"{path}.arms[{i}]"
        arm = _mapping(item, where)
        _known(arm, where, {"name", "weight", "thresholds", "domains"})
        table = _table(arm, where, unknown) if "thresholds" in arm else None
        if table is None and "domains" in arm:
            raise PolicyError(f"{where}.domains", "needs thresholds beside it")
        arms.append(
            Arm(
                _name(arm.get("name"), f"{where}.name"),
                _number(arm.get("weight"), f"{where}.weight", 0.0, math.inf),
                table,
            )
        )
    if len(arms) < 2:
        raise PolicyError(f"{path}.arms", "an experiment needs at least two arms")
    if len({arm.name for arm in arms}) != len(arms):
        raise PolicyError(f"{path}.arms", "arm names must be unique")
    if sum(arm.weight for arm in arms) <= 0:
        raise PolicyError(f"{path}.arms", "weights must not all be zero")
    return Experiment(f"{model}/{name}", unit, tuple(arms))


# -- typed access with paths ---------------------------------------------------------


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if value is None:
        raise PolicyError(path, "is required")
    if not isinstance(value, Mapping):
        raise PolicyError(path, f"must be a mapping, not {type(value).__name__}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if value is None:
        raise PolicyError(path, "is required")
    if not isinstance(value, list):
        raise PolicyError(path, f"must be a list, not {type(value).__name__}")
    return value


def _known(doc: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    unknown = sorted(str(key) for key in doc if key not in allowed)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise PolicyError(where, f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _string(value: object, path: str) -> str:
    if value is None:
        raise PolicyError(path, "is required")
    if not isinstance(value, str) or not value:
        raise PolicyError(path, "must be a non-empty string")
    return value


def _name(value: object, path: str) -> str:
    text = _string(value, path)
    if not _NAME.match(text):
        raise PolicyError(path, f"{text!r} must be 1-128 of letters, digits and ._:/-")
    return text


def _number(value: object, path: str, low: float, high: float) -> float:
    if value is None:
        raise PolicyError(path, "is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(path, f"must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise PolicyError(path, f"must be a finite number in [{low:g}, {high:g}], got {value}")
    return number


def _integer(value: object, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(path, "is required" if value is None else "must be an integer")
    if value < minimum:
        raise PolicyError(path, f"must be at least {minimum}")
    return value


def _scalar(value: object, path: str) -> str | float:
    if isinstance(value, str):
        return value
    return _number(value, path, -math.inf, math.inf)


def _timestamp(value: object, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise PolicyError(path, f"must be an RFC 3339 timestamp: {exc}") from exc
    if not isinstance(value, datetime):
        raise PolicyError(path, "must be an RFC 3339 timestamp")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
