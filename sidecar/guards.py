"""Each model's drift guard (``sidecar.core.drift``), kept across policy swaps.

A new snapshot rebuilds the guard of a model whose calibrator or ``drift`` section
changed, with an empty window, and keeps every other one, so an unrelated revision
neither resets a guard nor lifts a pause. A rebuilt guard keeps its predecessor's
alarm until its own window is full and judged: a change that makes the guard more
sensitive (which the registry applies at once) cannot resume automation the old one
had paused. A guard that
starts or stops alarming is logged (``drift.alarm`` / ``drift.cleared``, with both
PSI values); the PSI values and the alarm state are exported as gauges."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import structlog
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.core.drift import DriftGuard
from sidecar.policy.snapshot import Snapshot

log = structlog.get_logger("hitl.sidecar")


class DriftGuards:
    def __init__(self) -> None:
        self.by_model: dict[str, DriftGuard] = {}
        self._keys: dict[str, tuple[object, ...]] = {}

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Rebuild the guards of the models whose calibrator or drift section changed."""
        guards: dict[str, DriftGuard] = {}
        keys: dict[str, tuple[object, ...]] = {}
        for name, model in snapshot.policy.models.items():
            if model.drift is None:
                continue
            key = (model.calibrator.sha256, model.drift)
            old = self.by_model.get(name)
            if old is not None and self._keys.get(name) == key:
                guards[name], keys[name] = old, key
                continue
            meta = snapshot.calibrators[name].metadata
            guard = DriftGuard(
                model.drift, meta.histogram_edges, meta.histogram_counts, meta.class_counts
            )
            guard.on_change = partial(_log_change, name)
            if old is not None:
                guard.alarmed = old.alarmed
            guards[name], keys[name] = guard, key
        self.by_model, self._keys = guards, keys

    def export(self, meter: Meter) -> None:
        """hitl.drift.psi{model,of=confidence|class}, hitl.drift.class_shift{model} and
        hitl.drift.alarmed{model,action}."""

        def psi(_: CallbackOptions) -> Iterable[Observation]:
            for model, guard in self.by_model.items():
                if guard.filled:
                    yield Observation(guard.confidence_psi, {"model": model, "of": "confidence"})
                    yield Observation(guard.class_psi, {"model": model, "of": "class"})

        def alarmed(_: CallbackOptions) -> Iterable[Observation]:
            for model, guard in self.by_model.items():
                action = guard.policy.action.value
                yield Observation(int(guard.alarmed), {"model": model, "action": action})

        meter.create_observable_gauge(
            "hitl.drift.psi",
            [psi],
            description="PSI of the last window's calibrated confidence or predicted class "
            "against the calibrator's reference, by model",
        )

        def shift(_: CallbackOptions) -> Iterable[Observation]:
            for model, guard in self.by_model.items():
                if guard.filled:
                    yield Observation(guard.class_shift, {"model": model})

        meter.create_observable_gauge(
            "hitl.drift.class_shift",
            [shift],
            description="Total variation between the last window's predicted-class mix and "
            "the calibrator's reference (the share of decisions whose class the shift moved)",
        )
        meter.create_observable_gauge(
            "hitl.drift.alarmed",
            [alarmed],
            description="1 while a model's drift guard alarms (pausing automation when its "
            "action is pause_automation)",
        )


def _log_change(model: str, guard: DriftGuard) -> None:
    event = "drift.alarm" if guard.alarmed else "drift.cleared"
    emit = log.warning if guard.alarmed else log.info
    emit(
        event,
        model=model,
        confidence_psi=round(guard.confidence_psi, 4),
        class_psi=round(guard.class_psi, 4),
        psi_alarm=guard.policy.psi_alarm,
        paused=guard.paused,
        window=guard.policy.window,
    )
