"""Governance reports: what one model's routing did over a period, as one
self-contained HTML page for model-risk officers and SREs (docs/reports.md).

- ``calibration-health``: the weighted reliability diagram; ECE and Tier-1 accuracy
  with its interval against the policy's ``max_ece`` and ``target_tier1_accuracy``;
  PSI per bucket against the calibrator artefact's reference; each domain and group.
- ``routing-distribution``: the tiers' and the reasons' shares per bucket, and the
  automation rate.
- ``experiment``: each arm's automation rate, Tier-1 error rate with its counts and
  review volume, and its always-valid p-value against the control look by look.
- ``threshold-review``: every policy revision of the period that touched the model:
  who proposed and who approved it, why (the monitor's evidence laid out), what
  changed.

Every figure is the calibration monitor's own: the weights, intervals and tests of
``monitor.estimates`` and ``monitor.checks``, so a report over a window says what
``hitl monitor check`` says over it. Pure: the observations, the policy and its
revisions in, a string of HTML out; reading the feedback log and the registry is the
command's (``monitor.report_cli``). Charts are matplotlib figures drawn as inline
SVG; the page loads nothing (no script, font, stylesheet or image), and its
Content-Security-Policy forbids it to."""

from __future__ import annotations

from monitor.report.catalogue import REPORTS, Report, render
from monitor.report.measures import Look, looks, reason_shares, review_volume
from monitor.report.subject import Period, Revision, Subject
from monitor.report.threshold_review import evidence

__all__ = [
    "REPORTS",
    "Look",
    "Period",
    "Report",
    "Revision",
    "Subject",
    "evidence",
    "looks",
    "reason_shares",
    "render",
    "review_volume",
]
