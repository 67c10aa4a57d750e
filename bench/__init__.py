"""Benchmarks printing JSON lines {bench, metric, value, unit, baseline, ratio, target}."""
