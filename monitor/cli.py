"""``hitl monitor``: the calibration monitor.

hitl monitor serve     check every model every HITL_MONITOR_INTERVAL_SECONDS, export
                       the figures, tighten through the registry on a breach
hitl monitor check     one check now, its findings as JSON on stdout (with
                       --act alert, the default here, nothing is changed)"""

from __future__ import annotations

import argparse
import json
from typing import Any

from monitor.config import MonitorConfig
from sidecar.commands import add_serve_command
from sidecar.settings import add_flags, flag_values


def add_commands(commands: Any) -> None:
    """Add ``monitor`` and its actions to the ``hitl`` sub-command parser."""
    monitor = commands.add_parser(
        "monitor", help="the calibration monitor: health, drift, experiments, tightening"
    )
    actions = monitor.add_subparsers(dest="action", required=True)
    add_serve_command(
        actions, "check every model continuously and act on breaches", MonitorConfig, _serve
    )
    check = actions.add_parser("check", help="one check now, its findings as JSON")
    add_flags(check, MonitorConfig)
    check.set_defaults(run=_run_check, act="alert")


def _serve(config: MonitorConfig) -> None:
    from monitor.app import serve

    serve(config)


def _run_check(args: argparse.Namespace) -> int:
    from monitor.app import build

    process = build(MonitorConfig.load(flag_values(args, MonitorConfig)))
    try:
        applied = process.monitor.check()
        findings = process.monitor.findings
    finally:
        process.stop()
    out = {
        "models": {model: f.as_json() for model, f in findings.items()},
        "applied": [
            {
                "model": a.model,
                "breach": a.breach.kind,
                "proposal": a.proposal,
                "revision": a.revision,
            }
            for a in applied
        ],
    }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0
