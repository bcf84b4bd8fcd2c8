"""``hitl review``: run the review queue, and work it as a reviewer.

    hitl review serve [--listen HOST:PORT] [--db ...] [--sla ...] [--console-listen HOST:PORT]
    hitl review principal add NAME --role R...          prints a new bearer token once
    hitl review principal list                          (these two act on the database)
    hitl review next [--model M]                        claim the most urgent item, print it
    hitl review resolve ID (--accept | --override --class K / --label L)
    hitl review release ID                              give back an item you hold (skip it)
    hitl review list [--state open|claimed|resolved|adjudication] [--model M] [--tier T]
    hitl review export --out FILE.jsonl [--model M] [--since T]   labelled data for calibrators
    hitl review submit FILE.jsonl                       escalation records, one JSON object a line
    hitl review bulk-accept --model M --min-confidence C [--rule R] [--tier T] [--limit N]
                            [--dry-run]                 leads: accept each matching open item
    hitl review revert ID --reason TEXT                 leads: take back one resolution

Commands other than serve and principal talk to a running queue (``--target``, env
HITL_REVIEW_TARGET, default the queue's default address) as the principal their
credentials name (``--token-file`` or HITL_REVIEW_TOKEN_FILE, or the token in
HITL_REVIEW_TOKEN; ``--ca`` for TLS, ``--cert``/``--key`` for mTLS). A lead may name
the reviewer it acts for (``--for``). They print JSON on stdout, and exit 1 with the
server's status and message on stderr when it refuses (``hitl: NOT_FOUND: no open
item``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.commands import (
    StoreFlag,
    add_principal_commands,
    add_serve_command,
    moment,
    reports_refusals,
)
from sidecar.review.access import ReviewRole
from sidecar.review.config import DEFAULT_REVIEW_LISTEN, ReviewConfig
from sidecar.review.item import TIERS
from sidecar.settings import add_target_flags, client_credentials

if TYPE_CHECKING:
    from sidecar.review.client import ReviewClient
    from sidecar.review.store import ReviewStore

STATES = ("open", "claimed", "resolved", "adjudication")
Run = Callable[[argparse.Namespace], int]


def add_commands(commands: Any) -> None:
    """Add ``review`` and its actions to the ``hitl`` sub-command parser."""
    review = commands.add_parser("review", help="run the review queue, or work it as a reviewer")
    actions = review.add_subparsers(required=True, metavar="ACTION")

    serving = "run the review queue (gRPC, and the web console if configured)"
    add_serve_command(actions, serving, ReviewConfig, _serve)
    add_principal_commands(actions, "review queue", [r.value for r in ReviewRole], _database())

    claim = actions.add_parser("next", help="claim the most urgent open item and print it")
    _target(claim)
    _acting_for(claim)
    claim.add_argument("--model", default="", help="only items of this model")
    claim.add_argument("--lease", type=float, default=0.0, help="lease seconds (default 300)")
    claim.set_defaults(run=run_next)

    resolve = actions.add_parser("resolve", help="record your verdict on an item you claimed")
    _target(resolve)
    resolve.add_argument("escalation_id")
    _acting_for(resolve)
    verdict = resolve.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", action="store_true", help="the model's answer is right")
    verdict.add_argument("--override", action="store_true", help="the model was wrong")
    resolve.add_argument("--class", dest="corrected_class", type=int, help="the true class index")
    resolve.add_argument("--label", default="", help="the true label")
    resolve.add_argument("--rationale", default="")
    resolve.add_argument(
        "--time-to-label", type=float, default=0.0, help="seconds spent (default: since claim)"
    )
    resolve.set_defaults(run=run_resolve)

    release = actions.add_parser(
        "release", help="give back an item you claimed, unresolved, for someone else"
    )
    _target(release)
    release.add_argument("escalation_id")
    _acting_for(release)
    release.set_defaults(run=run_release)

    listing = actions.add_parser("list", help="items, most urgent first, as JSON lines")
    _target(listing)
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--model", default="")
    listing.add_argument("--tier", choices=TIERS)
    listing.add_argument("--limit", type=int, default=0, help="default 100, at most 1000")
    listing.set_defaults(run=run_list)

    export = actions.add_parser(
        "export", help="resolved items as labelled JSONL that hitl calibrate reads"
    )
    _target(export)
    export.add_argument("--out", required=True, type=Path, help="the .jsonl to write")
    export.add_argument("--model", default="", help="only this model (one file per model)")
    export.add_argument(
        "--since", type=moment, default=0.0, help="resolved at or after: Unix seconds or ISO 8601"
    )
    export.set_defaults(run=run_export)

    submit = actions.add_parser(
        "submit", help="submit escalation records (JSON lines, Escalation.to_dict) to the queue"
    )
    _target(submit)
    submit.add_argument("file", type=Path)
    submit.set_defaults(run=run_submit)
    _add_lead_commands(actions)


def _add_lead_commands(actions: Any) -> None:
    """``bulk-accept`` and ``revert``: a lead's actions on many items, or taking one back."""
    bulk = actions.add_parser(
        "bulk-accept",
        help="leads: accept every open item of a model at or above a calibrated confidence",
    )
    _target(bulk)
    bulk.add_argument("--model", required=True)
    bulk.add_argument(
        "--min-confidence", required=True, type=float, help="lowest calibrated confidence, 0 to 1"
    )
    bulk.add_argument("--rule", dest="rule_id", default="", help="only items of this rule")
    bulk.add_argument("--tier", choices=TIERS)
    bulk.add_argument("--limit", type=int, default=0, help="default 100, at most 1000")
    bulk.add_argument(
        "--dry-run", action="store_true", help="print what it would accept; change nothing"
    )
    bulk.set_defaults(run=run_bulk_accept)

    revert = actions.add_parser(
        "revert", help="leads: take back one resolution; the item is open again"
    )
    _target(revert)
    revert.add_argument("escalation_id")
    revert.add_argument("--reason", required=True, help="why, kept with the reverted resolution")
    revert.set_defaults(run=run_revert)


def _target(parser: argparse.ArgumentParser) -> None:
    add_target_flags(parser, "HITL_REVIEW", DEFAULT_REVIEW_LISTEN, "queue")


def _database() -> StoreFlag[ReviewStore]:
    from sidecar.review.store import open_store

    return StoreFlag(ReviewConfig, open_store)


def _acting_for(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--for",
        dest="reviewer",
        default="",
        metavar="REVIEWER",
        help="leads only: the reviewer this is done for (default: yourself)",
    )


def _serve(config: ReviewConfig) -> None:
    from sidecar.review.app import serve

    serve(config)


@reports_refusals
def run_next(args: argparse.Namespace) -> int:
    from sidecar.review.records import item_record

    with _client(args) as client:
        item = client.claim(args.model, args.lease, reviewer=args.reviewer)
    _print(item_record(item, time.time()))
    return 0


@reports_refusals
def run_resolve(args: argparse.Namespace) -> int:
    from sidecar.review.item import Verdict
    from sidecar.review.records import item_record

    with _client(args) as client:
        item = client.resolve(
            args.escalation_id,
            Verdict.ACCEPT if args.accept else Verdict.OVERRIDE,
            reviewer=args.reviewer,
            corrected_class=args.corrected_class,
            corrected_label=args.label,
            rationale=args.rationale,
            time_to_label_seconds=args.time_to_label,
        )
    _print(item_record(item, time.time()))
    return 0


@reports_refusals
def run_release(args: argparse.Namespace) -> int:
    from sidecar.review.records import item_record

    with _client(args) as client:
        item = client.release(args.escalation_id, reviewer=args.reviewer)
    _print(item_record(item, time.time()))
    return 0


@reports_refusals
def run_list(args: argparse.Namespace) -> int:
    from sidecar.review.item import ItemState
    from sidecar.review.records import item_record

    state = ItemState(args.state.upper()) if args.state else None
    with _client(args) as client:
        items = client.list_items(state, args.model, args.tier or "", args.limit)
    for item in items:
        # List is for leads and viewers, who may see each reviewer's answers.
        print(json.dumps(item_record(item, time.time(), answers=True), allow_nan=False))
    return 0


@reports_refusals
def run_export(args: argparse.Namespace) -> int:
    from sidecar.review.records import export_record, unusable

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    skipped: Counter[str] = Counter()
    models: Counter[str] = Counter()
    try:
        with _client(args) as client, tmp.open("w", encoding="utf-8") as handle:
            for item in client.export(args.model, args.since):
                if why := unusable(item):
                    skipped[why] += 1
                    continue
                models[item.escalation.model] += 1
                handle.write(json.dumps(export_record(item), allow_nan=False) + "\n")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    _print({"out": str(out), "exported": models.total(), "models": models, "skipped": skipped})
    if len(models) > 1:
        print(
            "hitl: the export holds several models; fit calibrators on one (--model)",
            file=sys.stderr,
        )
    return 0


@reports_refusals
def run_submit(args: argparse.Namespace) -> int:
    from sidecar.errors import DataError
    from sidecar.escalation.record import Escalation
    from sidecar.review.validation import MAX_BATCH

    escalations: list[Escalation] = []
    for line, record in _jsonl(args.file):
        try:
            escalations.append(Escalation.from_dict(record))
        except TypeError as exc:
            raise DataError(f"{args.file}:{line}", f"not an escalation record: {exc}") from exc
    results = []
    with _client(args) as client:
        for start in range(0, len(escalations), MAX_BATCH):
            results += client.submit(escalations[start : start + MAX_BATCH])
    counts = Counter(r.status.value.lower() for r in results)
    rejected = [
        {"escalation_id": r.escalation_id, "message": r.message} for r in results if r.message
    ]
    _print({"submitted": len(results), **counts, "rejections": rejected})
    return 1 if rejected else 0


@reports_refusals
def run_bulk_accept(args: argparse.Namespace) -> int:
    with _client(args) as client:
        done = client.bulk_accept(
            args.model,
            args.min_confidence,
            rule_id=args.rule_id,
            tier=args.tier or "",
            limit=args.limit,
            dry_run=args.dry_run,
        )
    ids = list(done.escalation_ids)
    _print({"batch_id": done.batch_id, "dry_run": done.dry_run, "accepted": len(ids),
            "escalation_ids": ids})  # fmt: skip
    return 0


@reports_refusals
def run_revert(args: argparse.Namespace) -> int:
    from sidecar.review.records import item_record

    with _client(args) as client:
        item = client.revert(args.escalation_id, args.reason)
    _print(item_record(item, time.time(), answers=True))
    return 0


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from sidecar.errors import DataError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(str(path), exc.strerror or str(exc)) from exc
    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line}", f"not JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line}", "each line must be a JSON object")
            yield line, record


def _client(args: argparse.Namespace) -> ReviewClient:
    from sidecar.review.client import ReviewClient

    given = client_credentials(args, "HITL_REVIEW")
    return ReviewClient(args.target, given.token, ca=given.ca, cert=given.cert, key=given.key)


def _print(record: dict[str, Any]) -> None:
    print(json.dumps(record, indent=2, allow_nan=False))
