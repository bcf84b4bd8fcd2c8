"""Policy snapshots and where they come from (a local file today)."""
