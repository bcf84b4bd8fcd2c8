"""The threshold-review report: every policy revision of the period that touched
the model, who proposed and who approved it, why (the monitor's evidence read back
from the change's reason and laid out), and what changed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from monitor.report.charts import _threshold_chart
from monitor.report.page import NONE, _e, _facts, _figure, _page, _section, _table, _when
from monitor.report.subject import Revision, Subject


def evidence(reason: str) -> tuple[str, dict[str, Any] | None, str]:
    """A change's reason as (its summary, the evidence the monitor attached as JSON,
    what followed the summary when that is not JSON: cut short, or by hand).
    ``monitor.actions.reason`` writes "<summary>; evidence <JSON>"."""
    summary, marker, rest = reason.partition("; evidence ")
    if not marker:
        return reason, None, ""
    try:
        parsed = json.loads(rest)
    except ValueError:
        return summary, None, rest
    return (summary, parsed, "") if isinstance(parsed, dict) else (summary, None, rest)


def threshold_review(subject: Subject) -> str:
    period = subject.period
    made = [
        r
        for r in subject.revisions
        if period.since <= r.created_at < period.until and r.touches(subject.model)
    ]
    at_once = sum(1 for r in made if not r.approved_by)
    summary = _facts(
        [
            ("Revisions touching the model", str(len(made))),
            ("Approved by an approver", str(len(made) - at_once)),
            ("Applied at once (an operator's tightening)", str(at_once)),
        ]
    )
    body = [_section("Summary", summary)]
    if any(r.thresholds is not None for r in subject.revisions):
        body.append(
            _section(
                "Thresholds in force",
                _figure(
                    _threshold_chart(subject),
                    "The model's default thresholds over the period, a dotted line at each "
                    "revision; shaded where automation is paused. Domain and arm thresholds "
                    "are in the changes below.",
                ),
            )
        )
    if made:
        body += [_revision_section(subject.model, r) for r in made]
    else:
        body.append(_section("Revisions", "<p>No revision in the period touched the model.</p>"))
    return _page(subject, "threshold-review", None, body, revisions=len(made))


def _revision_section(model: str, revision: Revision) -> str:
    approval = revision.approved_by or "applied at once: tightening"
    summary, attached, rest = evidence(revision.reason)
    facts = _facts(
        [
            ("Time", _when(revision.created_at)),
            ("Proposed by", revision.proposed_by or NONE),
            ("Approved by", approval),
            ("Reason", summary or NONE),
        ]
    )
    if attached is not None:
        facts += "<h4>Evidence</h4>" + _table(
            ["field", "value"],
            [[key, _value(key, value)] for key, value in _flat(attached)],
            "quoted",
        )
    elif rest:
        facts += f"<h4>Evidence (as recorded)</h4><pre>{_e(rest)}</pre>"
    changes = revision.changes_to(model)
    others = len(revision.changes) - len(changes)
    table = _table(
        ["field", "before", "after"],
        [[c.path, c.before or "(absent)", c.after or "(absent)"] for c in changes],
        "quoted",
    )
    note = f"<p>And {others} changes elsewhere in the policy.</p>" if others else ""
    return _section(
        f"Revision {revision.number}", facts + "<h4>Changes</h4>" + table + note, "revision"
    )


def _flat(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _value(key: str, value: Any) -> str:
    if key.endswith("window") and isinstance(value, list) and len(value) == 2:
        return f"{_when(float(value[0]))} to {_when(float(value[1]))}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(_value("", item) for item in value)
    return str(value)
