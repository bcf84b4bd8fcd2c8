"""The calibration monitor: every ``interval_seconds``, for each model of the
registry's head policy, the recorded decisions of the last ``window_seconds`` from the
feedback log are weighed (``monitor.estimates``), judged (``monitor.checks``), exported
as gauges, and each breach is answered through the registry (``monitor.actions``).

Run one monitor per feedback database: it is the one actor that tightens on the
loop's behalf (two would race to propose the same change; the registry's base
revision check would refuse the second). A check that fails (the registry or the
database down) is logged and counted by its supervisor and tried again at the next
interval; the gauges keep the last values read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from monitor.actions import Actions, Applied, Registry
from monitor.checks import KINDS, MODEL, Act, Findings, Limits, Reference, check_model
from monitor.recorded import observations
from sidecar.calibration.artefact import parse_metadata
from sidecar.calibration.runtime import build_session
from sidecar.clock import Clock
from sidecar.core.policy import Policy, parse_policy
from sidecar.feedback.dataset import DEFAULT_SOURCES
from sidecar.feedback.store import FeedbackStore
from sidecar.registry.messages import document_from_policy

log = structlog.get_logger("hitl.monitor")


@dataclass
class Monitor:
    store: FeedbackStore
    registry: Registry
    clock: Clock
    window: float
    limits: Limits = field(default_factory=Limits)
    group: str = ""
    act: bool = True
    sources: tuple[str, ...] = DEFAULT_SOURCES  # where labels may come from, first winning
    findings: dict[str, Findings] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # failed checks, by model
    _references: dict[str, Reference] = field(default_factory=dict)
    _epochs: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    checked_at: float = 0.0  # when the last check finished (0: none yet)

    def check(self) -> list[Applied]:
        """One pass over every model of the head policy; the tightenings applied. A
        model whose check fails is logged and counted (``failures``), and the others
        are checked all the same."""
        actions = Actions(self.registry)
        revision, doc = actions.head()
        policy = parse_policy({**doc, "revision": revision})
        done: list[Applied] = []
        findings: dict[str, Findings] = {}
        for name in policy.models:
            try:
                findings[name] = self._check_model(actions, policy, name, done)
            except Exception as exc:  # one model's failure must not blind the others
                self.failures[name] = self.failures.get(name, 0) + 1
                log.error("monitor.model_failed", model=name, error=repr(exc), exc_info=exc)
        self.findings = findings  # a model gone from the policy is no longer reported
        self.applied.extend(done)
        self.checked_at = self.clock.now()
        return done

    def _check_model(
        self, actions: Actions, policy: Policy, name: str, done: list[Applied]
    ) -> Findings:
        """Judge one model on the decisions made since its section of the policy last
        changed (an approver who lifts a pause, or approves a new calibrator, is not
        overruled by what the old policy did), those of the window for its health and
        all of them for its experiment; answer its first breach that tightens."""
        model = policy.models[name]
        epoch, epoch_at = self._epoch(name, policy.revision)
        now = self.clock.now()
        since = now - self.window
        start = min(since, epoch_at) if model.experiment is not None else since
        current = [
            o
            for o in observations(self.store, name, start, now, self.group, self.sources)
            if o.policy_revision >= epoch
        ]
        recent = [o for o in current if o.decided_at >= since]
        window = (max(since, epoch_at), now)
        reference = self._reference(policy, name)
        found = check_model(model, recent, reference, self.limits, window, current)
        for breach in found.breaches:
            log.warning("monitor.breach", model=name, breach=breach.kind, summary=breach.summary)
            if not self.act or breach.act is Act.ALERT:
                continue
            applied = actions.apply(name, breach)
            if applied is not None:
                done.append(applied)
                break  # the head moved: the next check judges the new revision
        return found

    def _epoch(self, name: str, head: int) -> tuple[int, float]:
        """The oldest revision (and its time) from which the model's section of the
        policy is the head's, looked up once per head."""
        if (name, head) not in self._epochs:
            self._epochs = {key: e for key, e in self._epochs.items() if key[1] == head}
            self._epochs[(name, head)] = epoch(self.registry, name)
        return self._epochs[(name, head)]

    def _reference(self, policy: Policy, model: str) -> Reference:
        """The model's calibrator's reference histograms (fetched once per artefact)."""
        sha = policy.models[model].calibrator.sha256
        if sha not in self._references:
            self._references[sha] = reference(self.registry, sha)
        return self._references[sha]

    def export(self, meter: Meter) -> None:
        """The last check's figures as gauges (names in docs/loop.md)."""
        meter.create_observable_gauge(
            "hitl.monitor.tier1_accuracy",
            [self._tier1],
            description="Weighted Tier-1 accuracy and its interval, by model and scope",
        )
        meter.create_observable_gauge(
            "hitl.monitor.ece", [self._ece], description="Weighted ECE, by model and scope"
        )
        meter.create_observable_gauge(
            "hitl.monitor.automation_share",
            [self._automation],
            description="Estimated share of decisions automated, by model and scope",
        )
        meter.create_observable_gauge(
            "hitl.monitor.override_rate",
            [self._overrides],
            description="Weighted share of labels that differ from the prediction, by tier",
        )
        meter.create_observable_gauge(
            "hitl.monitor.psi",
            [self._psi],
            description="PSI of the window's recorded decisions against the calibrator's "
            "reference, by model",
        )
        meter.create_observable_gauge(
            "hitl.monitor.class_shift",
            [self._shift],
            description="The class-prior shift estimate: total variation between the "
            "window's predicted-class mix and the calibrator's reference, by model",
        )
        meter.create_observable_gauge(
            "hitl.monitor.experiment_p_value",
            [self._experiments],
            description="Always-valid p-value of each arm's Tier-1 error against the control's",
        )
        meter.create_observable_gauge(
            "hitl.monitor.breaches",
            [self._breaches],
            description="Breaches found by the last check, by model and kind",
        )
        meter.create_observable_counter(
            "hitl.monitor.tightenings",
            [self._tightenings],
            description="Tightenings applied through the registry, by model, kind and scope "
            "(at scope model, 0 from the first check on, so a first one shows as an increase)",
        )
        meter.create_observable_counter(
            "hitl.monitor.model_failures",
            [self._failures],
            description="Checks of a model that failed (logged as monitor.model_failed)",
        )
        meter.create_observable_gauge(
            "hitl.monitor.last_check",
            [self._last_check],
            unit="s",
            description="Unix time the last check finished (a stalled monitor stops moving it)",
        )

    def _tier1(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            for scope, h in f.health.items():
                if h.tier1_accuracy is None or h.tier1_interval is None:
                    continue
                where = {"model": model, "scope": str(scope)}
                yield Observation(h.tier1_accuracy, {**where, "value": "estimate"})
                yield Observation(h.tier1_interval[0], {**where, "value": "lower"})
                yield Observation(h.tier1_interval[1], {**where, "value": "upper"})

    def _ece(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            for scope, h in f.health.items():
                if h.ece is not None:
                    yield Observation(h.ece, {"model": model, "scope": str(scope)})

    def _automation(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            for scope, h in f.health.items():
                if h.recorded:
                    share = h.tier_shares.get("AUTOMATED", 0.0)
                    yield Observation(share, {"model": model, "scope": str(scope)})

    def _overrides(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            for tier, rate in f.health[MODEL].override_rates.items():
                yield Observation(rate, {"model": model, "tier": tier})

    def _psi(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            for of, value in f.psi.items():
                yield Observation(value, {"model": model, "of": of})

    def _shift(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            if f.class_shift is not None:
                yield Observation(f.class_shift, {"model": model})

    def _experiments(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            for arm, comparison in f.experiments.items():
                yield Observation(comparison.p_value, {"model": model, "arm": arm})

    def _breaches(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, f in self.findings.items():
            kinds: dict[str, int] = {}
            for breach in f.breaches:
                kinds[breach.kind] = kinds.get(breach.kind, 0) + 1
            for kind in KINDS:
                yield Observation(kinds.get(kind, 0), {"model": model, "kind": kind})

    def _tightenings(self, _: CallbackOptions) -> Iterable[Observation]:
        counts: dict[tuple[str, str, str], int] = {
            (model, kind, "model"): 0 for model in self.findings for kind in KINDS
        }
        for applied in self.applied:
            key = (applied.model, applied.breach.kind, str(applied.breach.scope))
            counts[key] = counts.get(key, 0) + 1
        for (model, kind, scope), n in counts.items():
            yield Observation(n, {"model": model, "kind": kind, "scope": scope})

    def _failures(self, _: CallbackOptions) -> Iterable[Observation]:
        for model in {*self.findings, *self.failures}:
            yield Observation(self.failures.get(model, 0), {"model": model})

    def _last_check(self, _: CallbackOptions) -> Iterable[Observation]:
        if self.checked_at:
            yield Observation(self.checked_at)


def reference(registry: Registry, sha256: str) -> Reference:
    """The reference histograms in the calibrator artefact the registry stores as sha256."""
    info, data = registry.get_calibrator(sha256)
    meta = parse_metadata(build_session(data, info.name).get_modelmeta().custom_metadata_map)
    return Reference(meta.histogram_edges, meta.histogram_counts, meta.class_counts)


HISTORY_PAGE = 100


def epoch(registry: Registry, model: str) -> tuple[int, float]:
    """The oldest revision, and its time, from which the model's section of the
    policy has been what the head's is: the decisions made under the policy in force."""
    found, section = (0, 0.0), None
    before = 0
    while True:
        page = registry.history(HISTORY_PAGE, before)
        for revision in page:
            now = document_from_policy(revision.policy)["models"].get(model)
            if section is not None and now != section:
                return found
            section, found = now, (revision.revision, revision.created_at)
        if len(page) < HISTORY_PAGE:
            return found
        before = page[-1].revision
