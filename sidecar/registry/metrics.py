"""The registry's metrics: calls by method and outcome, the head revision and how
many sidecars are watching. Recording never raises into a call."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation


class RegistryMetrics:
    def __init__(self, meter: Meter, head: Callable[[], int]) -> None:
        self._calls = meter.create_counter(
            "hitl.registry.calls", description="Registry calls by method and outcome"
        )
        self._watchers = meter.create_up_down_counter(
            "hitl.registry.watchers", description="Open Watch streams"
        )

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(head())]

        meter.create_observable_gauge(
            "hitl.registry.head_revision",
            [observe],
            description="The newest policy revision this registry serves",
        )

    def call(self, method: str, outcome: str) -> None:
        self._calls.add(1, {"method": method, "outcome": outcome})

    def watching(self, change: int) -> None:
        self._watchers.add(change)
