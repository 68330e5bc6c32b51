"""Benchmark files into problem records: every public layout, with its quirks."""
