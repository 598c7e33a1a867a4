"""clipd benchmarks: ``make bench`` (``python -m bench.run_all``) runs every bench_*.py."""
