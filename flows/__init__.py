"""Prefect flows: one self-play iteration, a training run (iterations, resume), evaluation.

The run configuration (`azr.config.schema.AZRConfig`) is the flow parameter, so the Prefect UI renders
it as a form.
"""
