"""Load tests for Cartwright (`make bench`); see docs/benchmarks.md. Not collected by `pytest tests`."""
