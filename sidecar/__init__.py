"""Human-in-the-loop routing sidecar: calibrate a model's output, decide who acts
on it, audit the decision and escalate what a person must review."""

__version__ = "0.1.0"
