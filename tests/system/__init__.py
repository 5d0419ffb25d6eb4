"""Whole-system suites: the product as processes (API, workers, beat) on real servers, under faults,
across network hosts, under load, and the evaluation and benchmark that run it whole."""
