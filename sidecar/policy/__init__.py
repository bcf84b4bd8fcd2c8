"""Policy snapshots and where they come from: a local file (``file_source``) or the
registry (``registry_source``), the latter signed and kept as a last-known-good copy."""
