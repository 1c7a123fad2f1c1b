"""Prometheus metrics: `/metrics`, and the counters other packages add to."""
