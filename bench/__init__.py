"""Benchmarks (see BENCHMARKS.md); each module runs as ``python bench/NAME.py``."""
