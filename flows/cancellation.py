"""A Cancel from the Prefect UI (or API) for a training flow run that no worker supervises.

A flow run started by a worker or runner is cancelled by it: it sends the process SIGTERM and
records Cancelled. `azr train` runs its flow in its own process, so a Cancel pressed in the UI
only moved the run to "Cancelling" and nothing acted on it. This watcher polls the flow run's
state from a thread; on Cancelling it sends this process SIGTERM, which takes the path of every
interrupt (the engine stops its command within its grace period, MLflow records KILLED, nothing
half-written is kept), and once the flow has unwound the caller records the final Cancelled,
which Prefect's in-process engine would otherwise leave as Crashed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from uuid import UUID

logger = logging.getLogger(__name__)

POLL_S = 2.0

# Flow runs this process was asked to cancel; `record_cancelled` turns them Cancelled once unwound.
_cancelled: set[UUID] = set()
_lock = threading.Lock()


def supervised() -> bool:
    """A worker or runner started this process for its flow run, and handles its cancellation."""
    return bool(os.environ.get("PREFECT__FLOW_RUN_ID"))


class CancellationWatch:
    """Polls one flow run's state; on Cancelling, interrupts this process once."""

    def __init__(self, flow_run_id: UUID, poll_s: float = POLL_S) -> None:
        self.flow_run_id = flow_run_id
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="azr-cancellation-watch", daemon=True)

    def start(self) -> CancellationWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_s + 5)

    def _watch(self) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            while not self._stop.wait(self.poll_s):
                try:
                    state = client.read_flow_run(self.flow_run_id).state
                except Exception as exc:  # noqa: BLE001 - the API may blink; the run goes on
                    logger.debug("reading the flow run's state failed: %s", exc)
                    continue
                if state is not None and state.is_cancelling():
                    with _lock:
                        _cancelled.add(self.flow_run_id)
                    logger.warning("flow run %s was cancelled from Prefect: stopping the run", self.flow_run_id)
                    os.kill(os.getpid(), signal.SIGTERM)  # the interrupt path, in the main thread
                    return


@contextlib.contextmanager
def watch_for_cancellation(flow_run_id: UUID | None) -> Iterator[None]:
    """Watch this flow run while the block runs, unless a worker or runner already does."""
    if flow_run_id is None or supervised():
        yield
        return
    watch = CancellationWatch(flow_run_id).start()
    try:
        yield
    finally:
        watch.stop()


def record_cancelled() -> list[UUID]:
    """After the flow unwound: every flow run cancelled from Prefect is set Cancelled (forced over
    the Crashed that the in-process engine records for the interrupt). Returns those ids."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with _lock:
        ids = sorted(_cancelled, key=str)
        _cancelled.clear()
    if not ids:
        return []
    with get_client(sync_client=True) as client:
        for flow_run_id in ids:
            try:
                client.set_flow_run_state(flow_run_id, Cancelled(message="cancelled from Prefect; the run stopped "
                                                                           "cleanly and can be resumed"), force=True)
            except Exception as exc:  # noqa: BLE001 - the run itself stopped cleanly; say what was not recorded
                logger.warning("could not record flow run %s as Cancelled: %s", flow_run_id, exc)
    return ids
