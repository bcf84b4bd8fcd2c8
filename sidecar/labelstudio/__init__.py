"""Label Studio as a review backend: the bridge (``hitl labelstudio serve``) that
turns annotations made in Label Studio into resolutions for the feedback service,
keeps the SLA of the tasks the sidecar's Label Studio sink made
(``sidecar.escalation.sinks.labelstudio``), and writes a classification project's
labeling config (``hitl labelstudio config``). docs/labelstudio.md."""
