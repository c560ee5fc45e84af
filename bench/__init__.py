"""Benchmarks (`make bench-fold`); not tests: nothing here asserts a timing."""
