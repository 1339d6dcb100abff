"""Reproducible benchmarks: `python -m bench [name ...]` writes JSON into bench/results/ and a table to README.md."""
