"""Escalations: what a person must review, handed to a sink before Route answers."""
