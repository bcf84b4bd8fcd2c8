"""The reviewers' web console, served by the review queue's process when
``HITL_REVIEW_CONSOLE_LISTEN`` is set: server-rendered pages (Starlette and Jinja2)
with a small hand-written script for keyboard shortcuts, the SLA countdown and the
time-to-label measurement, plus a JSON API for automation.

It holds no state of its own: every page and action goes through the queue object
the gRPC servicer uses (``sidecar.review.queue``), on the same store, under the same
role table (``sidecar.review.access``). Who is calling comes from a signed session
cookie (after signing in with a queue token), from an authenticating proxy's user
header (only from the proxy addresses configured), or, for the JSON API, from a
bearer token.

Pure: ``view`` (what a page shows, the evidence recorded) and ``inputs`` (which
inputs may be shown, and how). Adapters: ``sessions`` (signed cookies, CSRF),
``fetch`` (a text input read over HTTP), ``app`` (the Starlette application)."""
