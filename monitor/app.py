"""Assemble and run the calibration monitor: the feedback store (read only), a
registry client as the monitor's principal, the periodic check, metrics; graceful
shutdown on SIGTERM and SIGINT."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from monitor.actions import Registry
from monitor.checks import Limits
from monitor.config import MonitorConfig
from monitor.service import Monitor
from monitor.sources import open_feedback_log
from sidecar.clock import Clock, SystemClock
from sidecar.feedback.store import FeedbackStore
from sidecar.serving import serve_until_signalled
from sidecar.settings import env_of
from sidecar.supervision import Periodic
from sidecar.telemetry.metrics import observe_tasks, service_meters

log = structlog.get_logger("hitl.monitor")


@dataclass
class MonitorProcess:
    config: MonitorConfig
    monitor: Monitor
    task: Periodic
    meters: MeterProvider

    @property
    def address(self) -> str:
        return self.config.metrics_addr

    def start(self) -> None:
        self.task.start()
        log.info(
            "monitor.started",
            registry=self.config.registry,
            interval_seconds=self.config.interval_seconds,
            window_seconds=self.config.window_seconds,
            act=self.config.act,
        )

    def stop(self) -> None:
        self.task.stop()
        self.monitor.store.close()
        close = getattr(self.monitor.registry, "close", None)
        if close is not None:
            close()
        self.meters.shutdown()
        log.info("monitor.stopped")


def build(
    config: MonitorConfig,
    *,
    clock: Clock | None = None,
    store: FeedbackStore | None = None,
    registry: Registry | None = None,
    metric_readers: list[MetricReader] | None = None,
) -> MonitorProcess:
    """Wire a monitor from config; keyword arguments replace the real adapters."""
    var = env_of(MonitorConfig, "metrics_addr")
    _, meters = service_meters("hitl-monitor", config.metrics_addr, var, metric_readers or ())
    monitor = Monitor(
        store or open_feedback_log(config),
        registry or config.registry_client(),
        clock or SystemClock(),
        config.window_seconds,
        Limits(config.min_labels, config.min_recorded, config.level, config.alpha),
        config.group_attribute,
        config.act == "tighten",
        config.label_sources,
    )
    meter = meters.get_meter("hitl.monitor")
    monitor.export(meter)
    task = Periodic("monitor-check", config.interval_seconds, monitor.check)
    observe_tasks(meter, lambda: [task.state])
    return MonitorProcess(config, monitor, task, meters)


def serve(config: MonitorConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    serve_until_signalled(lambda: build(config), config.port_file)
