"""Benchmark scripts: each prints a table of measured numbers (speed and accuracy targets live here, never in timed unit tests)."""
