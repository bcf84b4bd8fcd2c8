"""The ONNX calibrator: the artefact contract and the runtime that loads and runs it."""
