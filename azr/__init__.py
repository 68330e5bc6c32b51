"""Absolute Zero Reasoner self-play: the algorithm, sandbox, engine and pipeline (no Prefect)."""
