"""Benchmarks run against a real served app (see bench/README.md)."""
