"""The registry: versioned, signed, two-person-approved policies and calibrator
artefacts, pushed to sidecars by ``Watch`` (``hitl registry``)."""
