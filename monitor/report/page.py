"""The HTML page every report is drawn on: its head, Content-Security-Policy and
CSS, its header of facts and its footer, and the sections, figures and tables in
it, every text escaped; and how numbers, intervals and times are written in it."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from monitor.checks import ESTIMATOR
from monitor.estimates import Health
from monitor.report.subject import Subject

NONE = "—"
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:#1d1d1f;margin:0 auto;max-width:64rem;padding:1.5rem 2rem 3rem}
h1{font-size:1.6rem;margin:0 0 .8rem}h2{font-size:1.2rem;margin:2rem 0 .6rem;
border-bottom:1px solid #d0d0d5;padding-bottom:.2rem}h4{margin:1rem 0 .3rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d5;padding:.25rem .55rem;text-align:left;vertical-align:top}
table.quoted{table-layout:fixed;width:100%}table.quoted th:first-child{width:35%}
table.quoted td{overflow-wrap:break-word}
th{background:#f3f3f6}table.facts th{width:18rem;font-weight:600}
figure{margin:.5rem 0 1rem}figcaption{color:#55555a;font-size:.9rem;max-width:48rem}
svg{max-width:100%;height:auto;display:block}code,pre{font-family:ui-monospace,
"DejaVu Sans Mono",monospace;font-size:.9em}pre{white-space:pre-wrap;background:#f6f6f8;
padding:.5rem}section.revision{border-left:3px solid #4c72b0;padding-left:1rem}
footer{margin-top:2.5rem;color:#6e6e73;font-size:.85rem}
@media print{body{max-width:none;padding:0}section{break-inside:avoid}}
"""
# Nothing may be fetched: the page is complete as written (docs/reports.md).
POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
# Each report's title by the command's name (catalogue.REPORTS pairs it with its
# drawing); the page's <title> and heading.
TITLES = {
    "calibration-health": "Calibration health",
    "routing-distribution": "Routing distribution",
    "experiment": "Experiment",
    "threshold-review": "Threshold review",
}


def _page(
    subject: Subject, kind: str, whole: Health | None, sections: Sequence[str], revisions: int = 0
) -> str:
    period = subject.period
    title = f"{TITLES[kind]}: model {subject.model}"
    volume = (
        f"{revisions} policy revisions in the period touched the model"
        if whole is None
        else f"{whole.recorded:,} recorded decisions ({whole.labelled:,} labelled), standing "
        f"for an estimated {whole.decisions:,.0f} decisions"
    )
    facts = _facts(
        [
            ("Model", subject.model),
            (
                "Period",
                f"{_when(period.since)} to {_when(period.until)} ({period.buckets} buckets)",
            ),
            ("Generated", _when(subject.generated_at)),
            ("Policy", f"revision {subject.policy_revision}, in force at the period's end"),
            ("Estimator", ESTIMATOR),
            ("Data", volume),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1>{facts}</header>\n<main>\n{''.join(sections)}</main>\n"
        f"<footer>hitl report {_e(kind)}: read from the feedback service's database and the "
        "policy registry, changing neither. Self-contained: this page loads nothing.</footer>\n"
        "</body>\n</html>\n"
    )


def _section(title: str, body: str, css: str = "") -> str:
    kind = f' class="{css}"' if css else ""
    return f"<section{kind}>\n<h2>{_e(title)}</h2>\n{body}\n</section>\n"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """css "quoted": its cells hold values as recorded (hashes, JSON), wrapped to fit."""
    if not rows:
        return "<p>None.</p>"
    kind = f' class="{css}"' if css else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: float | None) -> str:
    return NONE if value is None or math.isnan(value) else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def _interval(bounds: tuple[float, float] | None) -> str:
    return NONE if bounds is None else f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def _limit(value: float | None) -> str:
    return "not set" if value is None else f"{value:g}"
