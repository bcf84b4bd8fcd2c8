"""Offline calibrator work: fit on held-out labelled outputs, measure calibration,
export the ONNX artefact the sidecar runs, recommend routing thresholds.

Needs the ``calibrate`` extra (scipy, scikit-learn, onnx, matplotlib, tqdm); the
sidecar's runtime never imports this package (only ``hitl``'s argument parser does,
through ``calibrators.cli``, which defers every heavy import)."""
