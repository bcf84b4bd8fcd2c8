"""The reference review queue (``hitl review``): receives escalations over gRPC,
leases them to reviewers, records their verdicts and exports the labelled data the
calibrators fit on.

Pure: ``item`` (the types), ``errors`` (why an operation on an item is refused),
``sla`` (deadlines per tier), ``validation``, ``resolution`` (what a verdict records,
who may give it) and ``records`` (the JSON the CLI prints and the export line).
Adapters: ``store`` (the interface) and ``stores`` (SQLite, PostgreSQL), ``queue``
(store + clock + metrics + logs), ``messages`` and ``server`` (gRPC), ``client``,
``config``, ``app`` (the process) and ``cli``. Nothing here imports the sidecar's Route path."""
