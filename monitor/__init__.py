"""The loop's second half: calibration health, experiments and the actions and
reports that follow from them, computed from the feedback log. Above the offline
tools (it fits and bounds with them), below the ``hitl`` command."""
