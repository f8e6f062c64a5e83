"""Benchmarks: `python -m bench.suite` (against peers) and `python -m bench.throughput`; see
bench/README.md."""
