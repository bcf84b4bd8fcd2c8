"""``hitl monitor``: the calibration monitor.

hitl monitor serve     check every model every HITL_MONITOR_INTERVAL_SECONDS, export
                       the figures, tighten through the registry on a breach
hitl monitor check     one check now, its findings as JSON on stdout (with
                       --act alert, the default here, nothing is changed)
hitl monitor recalibrate --model M
                       fit a new calibrator on the window's labels and propose it,
                       with its evidence, for an approver (never applied here)"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibrators.cli import DEFAULT_LOW_TARGET, METHOD_NAMES
from monitor.config import MonitorConfig
from sidecar.commands import add_serve_command, moment, reports_refusals
from sidecar.errors import ConfigError
from sidecar.settings import add_flags, flag_values

if TYPE_CHECKING:
    from monitor.recalibrate import Request


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
    _add_recalibrate(actions)


def _add_recalibrate(actions: Any) -> None:
    recalibrate = actions.add_parser(
        "recalibrate",
        help="fit a new calibrator on the window's labels and propose it with its evidence"
        " (an approver decides)",
    )
    add_flags(recalibrate, MonitorConfig)
    recalibrate.add_argument("--model", required=True, help="a model of the head policy")
    recalibrate.add_argument(
        "--since",
        type=moment,
        help="decided at or after: Unix seconds or ISO 8601 (default: --until less the"
        " monitor's window)",
    )
    recalibrate.add_argument(
        "--until", type=moment, help="decided and labelled before (default: now)"
    )
    recalibrate.add_argument(
        "--target",
        type=float,
        help="the Tier-1 accuracy t_high must bound (default: the model's"
        " target_tier1_accuracy); the bound's confidence is --level",
    )
    recalibrate.add_argument(
        "--low-target",
        type=float,
        default=DEFAULT_LOW_TARGET,
        help=f"the accuracy t_low must bound (default {DEFAULT_LOW_TARGET})",
    )
    recalibrate.add_argument(
        "--method", choices=("auto", *METHOD_NAMES), default="auto", help="(default auto)"
    )
    recalibrate.add_argument(
        "--held-out",
        type=float,
        default=0.3,
        help="share of the labelled decisions kept out of the fit, for the evidence (default 0.3)",
    )
    recalibrate.add_argument("--seed", type=int, default=0, help="of the split (default 0)")
    recalibrate.add_argument(
        "--out",
        type=Path,
        default=Path("recalibration"),
        help="where the dataset, artefacts and evidence go (default ./recalibration)",
    )
    recalibrate.set_defaults(run=_run_recalibrate)


def _serve(config: MonitorConfig) -> None:
    from monitor.app import serve

    serve(config)


@reports_refusals
def _run_check(args: argparse.Namespace) -> int:
    from monitor.app import build
    from monitor.sources import registry

    config = MonitorConfig.load(flag_values(args, MonitorConfig))
    _logs_to_stderr()
    with registry(config) as client:
        process = build(config, registry=client)
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


@reports_refusals
def _run_recalibrate(args: argparse.Namespace) -> int:
    """Print the proposal as JSON; a registry that cannot be reached or refuses the
    credentials, or a database that cannot be read, is a ConfigError naming its flag
    (exit 2); any other refusal of the registry exits 1."""
    from monitor.recalibrate import recalibrate
    from monitor.sources import feedback_log, registry

    config = MonitorConfig.load(flag_values(args, MonitorConfig))
    _logs_to_stderr()
    request = _request(args, config)
    with registry(config) as client, feedback_log(config) as log:
        done = recalibrate(log, client, request)
    print(json.dumps(done.as_json(), indent=2, sort_keys=True))
    print(f"hitl: proposal {done.proposal.id} awaits an approver", file=sys.stderr)
    return 0


def _request(args: argparse.Namespace, config: MonitorConfig) -> Request:
    """The flags checked, times defaulted (until: now; since: the monitor's window)."""
    from monitor.recalibrate import Request

    until = time.time() if args.until is None else args.until
    since = until - config.window_seconds if args.since is None else args.since
    if since >= until:
        raise ConfigError(f"--since must be before --until ({since:.0f} >= {until:.0f})")
    for flag, value in (("--target", args.target), ("--low-target", args.low_target)):
        if value is not None and not 0.0 < value < 1.0:
            raise ConfigError(f"{flag} must lie strictly between 0 and 1, got {value}")
    if not 0.0 < args.held_out < 1.0:
        raise ConfigError(f"--held-out must lie strictly between 0 and 1, got {args.held_out}")
    return Request(
        model=args.model,
        since=since,
        until=until,
        out=args.out,
        target=args.target,
        low_target=args.low_target,
        level=config.level,
        method=args.method,
        held_out=args.held_out,
        seed=args.seed,
    )


def _logs_to_stderr() -> None:
    """A command whose answer is JSON on stdout logs (breaches, tightenings) to stderr."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
