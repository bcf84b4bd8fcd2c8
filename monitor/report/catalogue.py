"""The four reports by the command's name, each with its title and the function that
draws it, and ``render``, which draws one: where a new report is declared."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from monitor.report.calibration_health import calibration_health
from monitor.report.experiment import experiment
from monitor.report.page import TITLES
from monitor.report.routing_distribution import routing_distribution
from monitor.report.subject import Subject
from monitor.report.threshold_review import threshold_review


class Report(NamedTuple):
    title: str
    draw: Callable[[Subject], str]


# By the command's name (monitor.report_cli.REPORTS names the same ones), titled as
# the page heads them (monitor.report.page.TITLES).
REPORTS = {
    kind: Report(TITLES[kind], draw)
    for kind, draw in (
        ("calibration-health", calibration_health),
        ("routing-distribution", routing_distribution),
        ("experiment", experiment),
        ("threshold-review", threshold_review),
    )
}


def render(kind: str, subject: Subject) -> str:
    """The report called kind (a key of REPORTS) on subject, as an HTML page."""
    return REPORTS[kind].draw(subject)
