"""The seeding stage as a Prefect task (docs/algorithm.md §8.2): before iteration 1, the base model fills
the buffers. Resumable from its files (azr/pipeline/seeding.py), so a retry or a resumed flow
run continues where it stopped; it does nothing for a run with seed files or already seeded."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from azr.pipeline.context import RunContext
from azr.pipeline.seeding import run_seeding


@task(name="seeding", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
def seed_buffers(res: RunContext) -> dict[str, Any]:
    """Seed the run's buffers with the base model; returns the pools' summary."""
    return run_seeding(res)
