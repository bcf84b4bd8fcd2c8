"""``python -m sidecar`` is the ``hitl`` command."""

from sidecar.cli import main

raise SystemExit(main())
