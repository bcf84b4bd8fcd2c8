"""The feedback service: every signal about a prediction (its outcome, a user's
correction, a rating, an implicit signal, a preference, a reviewer's verdict),
validated, attributed to the request that produced it by ``request_id``, and kept as
an append-only event log (``hitl feedback serve``; docs/feedback.md)."""
