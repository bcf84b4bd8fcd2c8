"""``hitl feedback``: run the feedback service, send it events, read a request's.

    hitl feedback serve [--listen HOST:PORT] [--db sqlite:PATH | postgresql://...]
    hitl feedback principal add NAME --role R...   prints a new bearer token once
    hitl feedback principal list                   (these two act on the database)
    hitl feedback record FILE.jsonl                events in protobuf's JSON mapping, one a line
    hitl feedback get REQUEST_ID                   its decision and every event about it
    hitl feedback labels REQUEST_ID... | -         the ground truth that stands for each
                              [--label-source outcome,correction]   (role review or viewer)
    hitl feedback dead-letters | replay            events no decision claimed in time (on
                                                   the database); release the claimed ones
    hitl feedback dataset build --model M --out DIR [--since T] [--until T]
                              [--strategy S] [--label-source outcome,review,correction]
    hitl feedback dataset show ID --out DIR | rebuild DIR/ID.manifest.json
    hitl feedback export --model M --out DIR [...]  the same dataset, compiled by a
                                                   running service (role exporter)

``record``, ``get``, ``labels`` and ``export`` call a running service (``--target``, env
HITL_FEEDBACK_TARGET) as the principal their credentials name (``--token-file`` or
HITL_FEEDBACK_TOKEN_FILE, or the token in HITL_FEEDBACK_TOKEN; ``--ca`` for TLS,
``--cert``/``--key`` for mTLS). They print JSON on stdout, and exit 1 with the
server's status and message on stderr when it refuses."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.commands import (
    StoreFlag,
    add_principal_commands,
    add_serve_command,
    moment,
    print_rows,
    reports_refusals,
)
from sidecar.feedback.access import FeedbackRole
from sidecar.feedback.config import DEFAULT_FEEDBACK_LISTEN, FeedbackConfig
from sidecar.feedback.dataset import (
    DEFAULT_SOURCES,
    SOURCES,
    STRATEGIES,
    TRUTH_SOURCES,
    Dataset,
    Query,
    compile_dataset,
    query_of,
    read_manifest,
    write_dataset,
)
from sidecar.settings import add_target_flags, client_credentials

if TYPE_CHECKING:
    from sidecar.feedback.client import FeedbackClient
    from sidecar.feedback.store import FeedbackStore


def add_commands(commands: Any) -> None:
    """Add ``feedback`` and its actions to the ``hitl`` sub-command parser."""
    feedback = commands.add_parser(
        "feedback", help="run the feedback service, send it events, read a request's"
    )
    actions = feedback.add_subparsers(required=True, metavar="ACTION")

    add_serve_command(actions, "run the feedback service's gRPC server", FeedbackConfig, _serve)
    database = _database()
    roles = [role.value for role in FeedbackRole]
    add_principal_commands(actions, "feedback service", roles, database)

    dead = actions.add_parser(
        "dead-letters", help="events no decision claimed within the join window, oldest first"
    )
    dead.add_argument("--limit", type=int, default=100)
    database.add(dead)
    dead.set_defaults(run=lambda args: run_dead_letters(database.open(args), args.limit))
    replay = actions.add_parser(
        "replay", help="release the dead letters whose decision has arrived since"
    )
    database.add(replay)
    replay.set_defaults(run=lambda args: run_replay(database.open(args)))

    record = actions.add_parser(
        "record", help="send events (JSON lines in protobuf's JSON mapping; - for stdin)"
    )
    _target(record)
    record.add_argument("file", help="the .jsonl file, or - for standard input")
    record.set_defaults(run=run_record)

    _add_dataset_commands(actions, database)
    export = actions.add_parser(
        "export", help="a dataset compiled by a running service, written as dataset build does"
    )
    _target(export)
    _add_query_flags(export)
    export.set_defaults(run=run_export)

    get = actions.add_parser("get", help="every event about one request_id, in order")
    _target(get)
    get.add_argument("request_id")
    get.set_defaults(run=run_get)

    labels = actions.add_parser(
        "labels",
        help="the ground truth (an outcome's or a correction's label) that stands for each"
        " request_id, as the review queue's quality page reads it",
    )
    _target(labels)
    labels.add_argument(
        "request_ids", nargs="+", metavar="REQUEST_ID", help="request ids; - reads them from stdin"
    )
    labels.add_argument(
        "--label-source",
        type=_truth_sources,
        default=TRUTH_SOURCES,
        help="the sources a label may come from, the first winning"
        f" (default {','.join(TRUTH_SOURCES)})",
    )
    labels.set_defaults(run=run_labels)


def _add_dataset_commands(actions: Any, database: StoreFlag[FeedbackStore]) -> None:
    dataset = actions.add_parser(
        "dataset", help="compile labelled decisions into a versioned dataset (on the database)"
    )
    what = dataset.add_subparsers(required=True, metavar="ACTION")
    build = what.add_parser("build", help="write DIR/<id>.jsonl and its manifest; print it")
    _add_query_flags(build)
    database.add(build)
    build.set_defaults(run=lambda args: run_dataset_build(database.open(args), args))
    show = what.add_parser("show", help="a dataset's manifest")
    show.add_argument("id")
    show.add_argument("--out", type=Path, required=True, help="the datasets' directory")
    show.set_defaults(run=run_dataset_show)
    rebuild = what.add_parser(
        "rebuild", help="compile a manifest's query again and check the bytes are identical"
    )
    rebuild.add_argument("manifest", type=Path)
    database.add(rebuild)
    rebuild.set_defaults(run=lambda args: run_dataset_rebuild(database.open(args), args.manifest))


def _add_query_flags(parser: argparse.ArgumentParser) -> None:
    """A dataset's query, and where to write it."""
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--since", type=moment, default=0.0, help="decided at or after: Unix seconds or ISO 8601"
    )
    parser.add_argument(
        "--until", type=moment, help="decided and received before (default: now); fixes the log"
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="all")
    parser.add_argument(
        "--label-source",
        type=_sources,
        default=DEFAULT_SOURCES,
        help="the sources a label may come from, the first winning"
        f" (default {','.join(DEFAULT_SOURCES)})",
    )
    parser.add_argument("--out", type=Path, required=True, help="the datasets' directory")


def _sources(text: str, allowed: Iterable[str] = SOURCES) -> tuple[str, ...]:
    sources = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [source for source in sources if source not in allowed]
    if not sources or unknown or len(set(sources)) != len(sources):
        raise argparse.ArgumentTypeError(
            f"{text!r}: name each of {', '.join(allowed)} at most once, comma-separated"
        )
    return sources


def _truth_sources(text: str) -> tuple[str, ...]:
    return _sources(text, TRUTH_SOURCES)


def _database() -> StoreFlag[FeedbackStore]:
    from sidecar.feedback.store import open_store

    return StoreFlag(FeedbackConfig, open_store)


def _target(parser: argparse.ArgumentParser) -> None:
    add_target_flags(parser, "HITL_FEEDBACK", DEFAULT_FEEDBACK_LISTEN, "service")


def _serve(config: FeedbackConfig) -> None:
    from sidecar.feedback.app import serve

    serve(config)


@reports_refusals
def run_record(args: argparse.Namespace) -> int:
    """Send the file's events in batches; print the counts by status and every event
    not ACCEPTED or DUPLICATE; exit 1 when there is one."""
    from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
    from sidecar.feedback.validation import MAX_BATCH

    events = _events(args.file)
    results: list[fpb.RecordResult] = []
    with _client(args) as client:
        for start in range(0, len(events), MAX_BATCH):
            results += client.record_batch(events[start : start + MAX_BATCH])
    status = fpb.RecordResult.Status.Name
    counts = Counter(status(r.status).lower() for r in results)
    refused = [
        {"feedback_id": r.feedback_id, "status": status(r.status), "message": r.message}
        for r in results
        if r.status in (fpb.RecordResult.REJECTED, fpb.RecordResult.CONFLICT)
    ]
    _print({"sent": len(results), **counts, "refused": refused})
    return 1 if refused else 0


def run_dataset_build(store: FeedbackStore, args: argparse.Namespace) -> int:
    import time

    query = Query(
        args.model,
        args.since,
        time.time() if args.until is None else args.until,
        args.strategy,
        args.label_source,
    )
    try:
        dataset = compile_dataset(query, store.labelled(query.model, query.since, query.until))
    finally:
        store.close()
    return _written(args.out, dataset)


def _written(out: Path, dataset: Dataset) -> int:
    """Write the dataset and print its manifest; 1 when it has no rows."""
    write_dataset(out, dataset)
    _print(dataset.manifest)
    if not dataset.manifest["rows"]:
        model = dataset.manifest["query"]["model"]
        print(f"hitl: no labelled decisions of model {model!r} in that span", file=sys.stderr)
        return 1
    return 0


@reports_refusals
def run_export(args: argparse.Namespace) -> int:
    from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb

    request = fpb.ExportDatasetRequest(
        model=args.model,
        since=args.since,
        until=args.until or 0.0,
        strategy=args.strategy,
        label_sources=args.label_source,
    )
    with _client(args) as client:
        dataset = client.export(request)
    return _written(args.out, dataset)


def run_dataset_show(args: argparse.Namespace) -> int:
    _print(read_manifest(args.out / f"{args.id}.manifest.json"))
    return 0


def run_dataset_rebuild(store: FeedbackStore, path: Path) -> int:
    manifest = read_manifest(path)
    query = query_of(manifest)
    try:
        dataset = compile_dataset(query, store.labelled(query.model, query.since, query.until))
    finally:
        store.close()
    same = dataset.manifest["sha256"] == manifest["sha256"]
    _print({"id": manifest["id"], "rebuilt": dataset.id, "identical": same})
    return 0 if same else 1


def run_dead_letters(store: FeedbackStore, limit: int) -> int:
    return print_rows(store, lambda: store.dead_letters(limit))


def run_replay(store: FeedbackStore) -> int:
    try:
        released, left = store.replay_dead_letters()
    finally:
        store.close()
    _print({"released": released, "dead_letters": left})
    return 0


@reports_refusals
def run_get(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    with _client(args) as client:
        history = client.get(args.request_id)
    _print(json_format.MessageToDict(history, preserving_proto_field_name=True))
    return 0


@reports_refusals
def run_labels(args: argparse.Namespace) -> int:
    """Print a JSON line for each request id that has a label (request_id,
    class_index, source, received_at), in the order given, asking at most MAX_BATCH
    at a time; on stderr, how many of the ids had one."""
    from google.protobuf import json_format

    from sidecar.feedback.validation import MAX_BATCH

    ids = _request_ids(args.request_ids)
    found = 0
    with _client(args) as client:
        for start in range(0, len(ids), MAX_BATCH):
            for label in client.labels(ids[start : start + MAX_BATCH], args.label_source):
                fields = json_format.MessageToDict(
                    label,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                print(json.dumps(fields))
                found += 1
    print(f"{found} of {len(ids)} request ids have a label", file=sys.stderr)
    return 0


def _request_ids(given: list[str]) -> list[str]:
    """The ids given, or those read from stdin (one a line) for -; DataError when
    there are none."""
    from sidecar.errors import DataError

    ids = [line.strip() for line in sys.stdin] if given == ["-"] else given
    ids = [i for i in ids if i]
    if not ids:
        raise DataError("request_ids", "none given")
    return ids


def _events(name: str) -> list[Any]:
    """The events of a JSON-lines file (or stdin); DataError naming the line."""
    from google.protobuf import json_format

    from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
    from sidecar.errors import DataError

    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(name, str(getattr(exc, "strerror", None) or exc)) from exc
    events = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                events.append(json_format.Parse(raw, fpb.FeedbackEvent()))
            except json_format.ParseError as exc:
                raise DataError(f"{name}:{line}", f"not a feedback event: {exc}") from exc
    if not events:
        raise DataError(name, "holds no events")
    return events


def _client(args: argparse.Namespace) -> FeedbackClient:
    from sidecar.feedback.client import FeedbackClient

    given = client_credentials(args, "HITL_FEEDBACK")
    return FeedbackClient(args.target, given.token, ca=given.ca, cert=given.cert, key=given.key)


def _print(record: dict[str, Any]) -> None:
    print(json.dumps(record, indent=2, allow_nan=False))
