"""``hitl escalations``: look into a sidecar's spools and replay dead letters.

status         records and bytes awaiting delivery, the oldest, and dead letters
dead-letters   every dead letter as a JSON line: the escalation, sink and reason
replay         move dead letters back into the spool for delivery

With ``--decisions``, the same for the decision stream's spool (decision records and
outcomes for the feedback service) instead of the escalations'.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from sidecar.escalation.deadletter import DeadLetters, entries, request_replay
from sidecar.escalation.spool import Spool, SpoolBusy, read_unacked
from sidecar.settings import DEAD_LETTER_DIR as DEAD_LETTER
from sidecar.settings import DECISIONS_DEAD_LETTER_DIR as DECISIONS_DEAD
from sidecar.settings import DECISIONS_DIR as DECISIONS
from sidecar.settings import ENV_STATE_DIR
from sidecar.settings import SPOOL_DIR as SPOOL


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "escalations", help="inspect a sidecar's spools, replay dead letters"
    )
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    for name, run, help_text in (
        ("status", _status, "what awaits delivery, and how many dead letters"),
        ("dead-letters", _dead_letters, "print each dead letter as a JSON line"),
        ("replay", _replay, "move dead letters back into the spool for delivery"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument(
            "--state-dir", help="the sidecar's state directory (env HITL_STATE_DIR)"
        )
        action.add_argument(
            "--decisions",
            action="store_true",
            help="the decision stream's spool (for the feedback service) instead",
        )
        action.set_defaults(run=run)


def _spools(args: argparse.Namespace) -> tuple[Path, Path]:
    """The spool and the dead-letter spool the command acts on."""
    state = Path(args.state_dir or os.environ.get(ENV_STATE_DIR, "hitl-state"))
    spool, dead = (DECISIONS, DECISIONS_DEAD) if args.decisions else (SPOOL, DEAD_LETTER)
    if not (state / spool).is_dir():
        raise SystemExit(f"hitl: {state} holds no {spool}/ spool (a sidecar's state directory?)")
    return state / spool, state / dead


def _status(args: argparse.Namespace) -> int:
    spool_dir, dead_dir = _spools(args)
    records = list(read_unacked(spool_dir))
    oldest = orjson.loads(records[0][1]).get("created_at") if records else None
    dead = entries(dead_dir) if dead_dir.is_dir() else []
    report = {
        "undelivered": len(records),
        "undelivered_bytes": sum(len(payload) for _, payload in records),
        "oldest_created_at": oldest,
        "dead_letters": len(dead),
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    _, dead_dir = _spools(args)
    if dead_dir.is_dir():
        for entry in entries(dead_dir):
            sys.stdout.write(orjson.dumps(entry).decode() + "\n")
    return 0


def _replay(args: argparse.Namespace) -> int:
    spool_dir, dead_dir = _spools(args)
    try:
        spool = Spool(spool_dir)
    except SpoolBusy:
        request_replay(dead_dir)
        print("a sidecar owns this spool: it will replay the dead letters within a second")
        return 0
    try:
        dead = DeadLetters(Spool(dead_dir))
        moved = dead.replay_into(spool)
        dead.close()
    finally:
        spool.close()
    print(f"moved {moved} dead letters back into the spool; the next sidecar start delivers them")
    return 0
