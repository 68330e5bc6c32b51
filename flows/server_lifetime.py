"""Prefect's temporary API server lives exactly as long as the process that runs the flow.

With no PREFECT_API_URL, Prefect starts a temporary server (uvicorn, a child process) the first
time a client needs one and stops it at exit. A kill -9 of that process skips the exit, and the
server (~200 MB) would stay, orphaned, until killed by hand. Prefect starts it with a plain
Popen, so no PR_SET_PDEATHSIG can be asked for; instead this starts the same server (Prefect's
own singleton, which every Prefect client then uses) from the main thread before the flow, and
hands its pid to a watchdog process (azr.ops.process_watchdog) that stops it when this process is gone.

It runs in a session of its own: a Ctrl-C in the terminal reaches every process of the
foreground group, and a server killed by it would leave the interrupted run unable to record
its end (every Prefect call refused while the run stops). It stops with this process instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
from collections.abc import Iterator

from prefect.settings import PREFECT_API_URL

from azr.ops.process_watchdog import watch

logger = logging.getLogger(__name__)
_watchdogs: dict[int, object] = {}  # server pid -> its watchdog (kept: a dropped Popen warns)


@contextlib.contextmanager
def _own_session() -> Iterator[None]:
    """Processes started meanwhile by this thread get a session of their own (Prefect starts
    its server with a plain Popen, without a way to ask for that)."""
    plain = subprocess.Popen
    subprocess.Popen = functools.partial(plain, start_new_session=True)  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = plain  # type: ignore[misc]


def bind_temporary_server() -> int | None:
    """Start the temporary server now (where this process would use one) and tie its life to
    this process; its pid, or None when a real Prefect server is configured."""
    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    with _own_session():
        server.start()
    process = server.server_process
    if process is None:
        return None
    if process.pid not in _watchdogs:
        _watchdogs[process.pid] = watch(process.pid, os.getpid())
        logger.debug("Prefect's temporary server (pid %d) stops when pid %d does", process.pid, os.getpid())
    return process.pid
