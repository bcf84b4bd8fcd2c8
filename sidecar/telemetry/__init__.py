"""Audit records, logs, traces and metrics. Nothing here may block or fail a request:
exporters run in background workers and their errors are logged, not raised."""
