"""The ``hitl`` command: every service's and tool's sub-commands in one program, and
the end-to-end demo. It sits above the runtime (``sidecar``) and the offline tools
(``calibrators``), which never import it."""
