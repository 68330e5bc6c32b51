"""The self-play pipeline without Prefect: run directory, stages, metrics, resume."""
