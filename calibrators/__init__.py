"""Offline calibrator work: fit on held-out labelled outputs, measure calibration,
export the ONNX artefact the sidecar runs, recommend routing thresholds.

Needs the ``calibrate`` extra (scipy, onnx, scikit-learn); the sidecar never imports
this package."""
