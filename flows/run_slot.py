"""One Prefect global concurrency limit per training run, so a run is trained by one flow run
at a time: a scheduled extension that finds its run still going skips that night or queues.

The limit is `azr-run-<run directory name>` with limit 1; the training flow holds its slot for
as long as it trains (whether started from a deployment, a schedule or `azr train`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def run_limit_name(run_name: str) -> str:
    return "azr-run-" + re.sub(r"[^A-Za-z0-9._-]+", "-", run_name)


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another flow run created it just now


def run_is_going(run_name: str) -> bool:
    """True while a flow run holds this training run's slot."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(run_limit_name(run_name))
        except ObjectNotFound:
            return False
    return limit.active_slots > 0


@contextmanager
def hold_run_slot(run_name: str) -> Iterator[None]:
    """Hold the run's slot while the body trains; waits while another flow run holds it."""
    name = run_limit_name(run_name)
    _ensure_limit(name)
    with concurrency(name, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        yield
