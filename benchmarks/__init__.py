"""Benchmarks with enforced limits (``make bench``). They start real processes."""
