"""OpenTelemetry metrics of the Label Studio bridge; attribute values are enums
(result, reason, outcome, tier), never free text.

    hitl.labelstudio.annotations  counter  annotations read, by result (resolved,
                                           updated, corrected, unchanged, settled,
                                           refused)
    hitl.labelstudio.refused      counter  annotations refused, by reason (unknown_task,
                                           unmapped_reviewer, label_outside_list, no_label,
                                           no_label_list), each annotation once per reason
    hitl.labelstudio.webhooks     counter  webhook calls by outcome (ok, unauthenticated,
                                           forbidden, invalid, unavailable)
    hitl.labelstudio.overdue      counter  tasks raised a level for passing their deadline
    hitl.labelstudio.duplicates   counter  second tasks of one escalation, deleted
    hitl.labelstudio.items        gauge    unresolved tasks by tier, as of the last sweep

Prometheus names them ``hitl_labelstudio_overdue_total``, ``hitl_labelstudio_items``
and so on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.review.item import TIERS


class BridgeMetrics:
    def __init__(self, meter: Meter) -> None:
        self.annotations = meter.create_counter(
            "hitl.labelstudio.annotations", description="Annotations read, by result"
        )
        self.refused = meter.create_counter(
            "hitl.labelstudio.refused", description="Annotations refused, by reason"
        )
        self.webhooks = meter.create_counter(
            "hitl.labelstudio.webhooks", description="Webhook calls, by outcome"
        )
        self.overdue = meter.create_counter(
            "hitl.labelstudio.overdue",
            description="Tasks raised an escalation level for passing their deadline, by tier",
        )
        self.duplicates = meter.create_counter(
            "hitl.labelstudio.duplicates",
            description="Second tasks of one escalation found and deleted",
        )
        self._items: dict[str, int] = dict.fromkeys(TIERS, 0)
        meter.create_observable_gauge(
            "hitl.labelstudio.items",
            [self._observe_items],
            description="Unresolved Label Studio tasks by tier, as of the last sweep",
        )

    def refresh(self, counts: Mapping[str, int]) -> None:
        self._items = {tier: counts.get(tier, 0) for tier in TIERS}

    def _observe_items(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {"tier": tier}) for tier, count in self._items.items()]
