"""Predictions into verdicts: reasoning tasks, code benchmarks, math equivalence, pass@k, intervals."""
