"""``hitl report``: governance reports as self-contained HTML (``monitor.report``).

hitl report calibration-health|routing-distribution|experiment|threshold-review
    --model M --since T --until T [--buckets N] --out FILE.html

Read only: the feedback service's database (``--db``) and the registry
(``--registry``, a viewer's token suffices), with the calibration monitor's settings
and flags (``MonitorConfig``). Times are Unix seconds or ISO 8601 with a zone. Bad
input (an unknown model, a period without decisions, a database or registry that
cannot be read) is one line on stderr naming the flag or setting, and exit 2."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.config import MonitorConfig
from sidecar.commands import moment, reports_refusals
from sidecar.errors import ConfigError
from sidecar.settings import add_flags, flag_values

if TYPE_CHECKING:
    from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
    from monitor.checks import Reference
    from monitor.observations import Observation
    from monitor.report import Period, Revision, Subject
    from sidecar.core.policy import ModelPolicy
    from sidecar.registry.client import RegistryClient

# The reports by command name, with what each reads beyond the policy in force
# (monitor.report.REPORTS renders them; a test keeps the two in step).
REPORTS = {
    "calibration-health": "reliability, ECE and Tier-1 accuracy against the policy's "
    "targets, PSI against the calibrator's reference, per domain and group",
    "routing-distribution": "tier and reason shares over time, the automation rate",
    "experiment": "each arm against the control: automation, Tier-1 error, review volume, "
    "the always-valid p-value over time",
    "threshold-review": "every policy revision that touched the model: who, why, what changed",
}
READS_DECISIONS = frozenset(REPORTS) - {"threshold-review"}
READS_HISTORY = frozenset({"threshold-review"})  # the others need only the policy in force
PERIOD_FLAGS = {
    "since": "the period's start, Unix seconds or ISO 8601 with a zone (decided at or after)",
    "until": "the period's end, likewise (decided before)",
}
DEFAULT_BUCKETS = 12
MAX_BUCKETS = 500
HISTORY_PAGE = 100  # the registry's largest History page


def add_commands(commands: Any) -> None:
    """Add ``report`` and its reports to the ``hitl`` sub-command parser."""
    report = commands.add_parser(
        "report", help="governance reports as self-contained HTML, read only"
    )
    kinds = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    for name, help_text in REPORTS.items():
        parser = kinds.add_parser(name, help=help_text, description=help_text)
        add_flags(parser, MonitorConfig)
        parser.add_argument("--model", required=True, help="the model reported on")
        for edge, help_edge in PERIOD_FLAGS.items():
            parser.add_argument(f"--{edge}", type=moment, required=True, help=help_edge)
        parser.add_argument(
            "--buckets",
            type=_buckets,
            default=DEFAULT_BUCKETS,
            help=f"equal time buckets the period is cut into (default {DEFAULT_BUCKETS})",
        )
        parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
        parser.set_defaults(run=_run)


def _buckets(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_BUCKETS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_BUCKETS}")
    return value


@reports_refusals
def _run(args: argparse.Namespace) -> int:
    config = MonitorConfig.load(flag_values(args, MonitorConfig))
    if args.since >= args.until:
        raise ConfigError(
            f"--since must be before --until; got {_when(args.since)} and {_when(args.until)}"
        )
    from monitor.report import Period, render
    from sidecar.files import replace_file

    subject = _read(args.report, args.model, Period(args.since, args.until, args.buckets), config)
    replace_file(args.out, render(args.report, subject).encode())
    print(json.dumps({"report": args.report, "model": args.model, "out": str(args.out)}))
    return 0


def _read(kind: str, model: str, period: Period, config: MonitorConfig) -> Subject:
    """Everything the report reads, from the registry then the feedback log."""
    from monitor.checks import Limits
    from monitor.report import Subject
    from monitor.sources import registry as registry_of

    with registry_of(config) as registry:
        since = period.since if kind in READS_HISTORY else period.until
        messages = _revisions(registry, since, period.until)
        revisions, (number, policy) = _compiled(messages, model, period.until)
        reference = _reference(registry, policy) if kind == "calibration-health" else None
    if kind == "experiment" and policy.experiment is None:
        raise ConfigError(f"--model: {model!r} has no experiment in policy revision {number}")
    observations = _observations(config, model, period) if kind in READS_DECISIONS else []
    return Subject(
        model=model,
        period=period,
        generated_at=time.time(),
        policy=policy,
        policy_revision=number,
        observations=observations,
        reference=reference,
        revisions=revisions[::-1],
        limits=Limits(config.min_labels, config.min_recorded, config.level, config.alpha),
        group_attribute=config.group_attribute,
    )


def _revisions(registry: RegistryClient, since: float, until: float) -> list[pb.PolicyRevision]:
    """The revisions in force during [since, until), newest first: each made in it,
    then the one in force at since (made before it)."""
    found: list[pb.PolicyRevision] = []
    before = 0
    while True:
        page = registry.history(HISTORY_PAGE, before)
        for revision in page:
            if revision.created_at < until:
                found.append(revision)
            if revision.created_at < since:
                return found
        if len(page) < HISTORY_PAGE:
            return found
        before = page[-1].revision


def _compiled(
    messages: list[pb.PolicyRevision], model: str, until: float
) -> tuple[list[Revision], tuple[int, ModelPolicy]]:
    """The revisions as the report shows them, and the model's policy in force at
    until (ConfigError naming --model or --until when there is none)."""
    from monitor.report import Revision
    from sidecar.core.diff import FieldChange
    from sidecar.core.policy import parse_policy
    from sidecar.registry.messages import document_from_policy

    if not messages:
        raise ConfigError(f"--until: the registry holds no policy revision before {_when(until)}")
    revisions, policies = [], []
    for message in messages:
        doc = {**document_from_policy(message.policy), "revision": message.revision}
        compiled = parse_policy(doc).models.get(model)
        policies.append(compiled)
        revisions.append(
            Revision(
                number=message.revision,
                created_at=message.created_at,
                proposed_by=message.proposed_by,
                approved_by=message.approved_by,
                reason=message.reason,
                changes=tuple(FieldChange(c.path, c.before, c.after) for c in message.changes),
                thresholds=None if compiled is None else compiled.thresholds,
            )
        )
    head, policy = messages[0], policies[0]
    if policy is None:
        known = ", ".join(sorted(head.policy.models)) or "none"
        raise ConfigError(
            f"--model: no model {model!r} in policy revision {head.revision}, in force at "
            f"{_when(until)} (its models: {known})"
        )
    return revisions, (head.revision, policy)


def _reference(registry: RegistryClient, policy: ModelPolicy) -> Reference:
    """The calibrator artefact's reference histograms, as the monitor reads them."""
    from monitor.service import reference

    return reference(registry, policy.calibrator.sha256)


def _observations(config: MonitorConfig, model: str, period: Period) -> list[Observation]:
    """The model's recorded decisions in the period (ConfigError naming the setting
    when the database cannot be read, or the flags when it holds none)."""
    from monitor.recorded import observations
    from monitor.sources import feedback_log

    with feedback_log(config) as store:
        found = observations(
            store,
            model,
            period.since,
            period.until,
            config.group_attribute,
            config.label_sources,
        )
    if not found:
        raise ConfigError(
            f"--since/--until: no decision of model {model!r} was recorded from "
            f"{_when(period.since)} to {_when(period.until)}"
        )
    return found


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()
