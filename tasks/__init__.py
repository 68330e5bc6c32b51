"""Prefect tasks, one per self-play stage: thin wrappers around azr.pipeline.stages."""
