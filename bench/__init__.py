"""Benchmark harness: data, models and their split into layer groups, runs, records, reports."""
