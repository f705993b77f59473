"""Reproducible speed measurements; run with ``make bench`` (``python -m benchmarks``)."""
