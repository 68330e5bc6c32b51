"""One Prefect global concurrency limit per training run, so a run is trained by one flow run
at a time: a scheduled extension that finds its run still going skips that night or queues.

The limit is `azr-run-<run directory name>` with limit 1; the training flow holds its slot for
as long as it trains (whether started from a deployment, a schedule or `azr train`).

A slot outlives a holder killed with SIGKILL: Prefect keeps leases in the server's memory, so
after `azr train`'s ephemeral server died with the run, nothing ever frees the slot, and a
`--resume` would wait forever. The holder therefore also keeps an flock on a lock file beside
the run directory (`.<run name>.training.lock`; inside it, it would make a new run's directory
non-empty), which the kernel drops when its process dies however it dies; a busy slot whose
lock nobody holds is stale and is freed before the slot is taken.
"""

from __future__ import annotations

import fcntl
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

LEASE_SECONDS = 60.0  # Prefect's smallest lease: a crashed holder behind a real server frees it soonest
_STALE_RECHECK_S = 1.0  # a new holder takes its lock right after its slot: look twice before freeing

logger = logging.getLogger(__name__)


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


def _active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).active_slots
        except ObjectNotFound:
            return 0


def lock_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.training.lock"


def _lock_is_held(run_dir: Path) -> bool:
    """Whether a live process trains this run (holds its lock); False where there is no lock file."""
    path = lock_path(run_dir)
    if not path.is_file():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def _free_if_stale(name: str, run_dir: Path) -> None:
    """Free a slot that a dead holder left busy (no live process holds the run's lock)."""
    if _active_slots(name) == 0 or _lock_is_held(run_dir):
        return
    time.sleep(_STALE_RECHECK_S)
    if _active_slots(name) == 0 or _lock_is_held(run_dir):
        return
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    logger.info("freed %s: its holder died without releasing it (no process holds %s)", name, lock_path(run_dir))


def run_is_going(run_dir: Path) -> bool:
    """True while a live flow run holds this training run's slot."""
    name = run_limit_name(run_dir.name)
    _free_if_stale(name, run_dir)
    return _active_slots(name) > 0


@contextmanager
def _training_lock(run_dir: Path) -> Iterator[None]:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with lock_path(run_dir).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # the slot is ours, so nobody else holds it long
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def hold_run_slot(run_dir: Path) -> Iterator[None]:
    """Hold the run's slot (and its lock) while the body trains; waits while another live flow
    run holds it."""
    name = run_limit_name(run_dir.name)
    _ensure_limit(name)
    _free_if_stale(name, run_dir)
    if _active_slots(name) > 0:
        logger.info("%s is being trained by another flow run; waiting for it to finish", run_dir.name)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS, raise_on_lease_renewal_failure=False):
        with _training_lock(run_dir):
            yield
