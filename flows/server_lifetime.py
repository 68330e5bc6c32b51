"""Prefect's temporary API server lives exactly as long as the process that runs the flow.

With no PREFECT_API_URL, Prefect starts a temporary server (uvicorn, a child process) the first
time a client needs one and stops it at exit. A kill -9 of that process skips the exit, and the
server (~200 MB) would stay, orphaned, until killed by hand. Prefect starts it with a plain
Popen, so no PR_SET_PDEATHSIG can be asked for; instead this starts the same server (Prefect's
own singleton, which every Prefect client then uses) from the main thread before the flow, and
hands its pid to a watchdog process (azr.ops.process_watchdog) that stops it when this process is gone.
"""

from __future__ import annotations

import logging
import os

from prefect.settings import PREFECT_API_URL

from azr.ops.process_watchdog import watch

logger = logging.getLogger(__name__)
_watchdogs: dict[int, object] = {}  # server pid -> its watchdog (kept: a dropped Popen warns)


def bind_temporary_server() -> int | None:
    """Start the temporary server now (where this process would use one) and tie its life to
    this process; its pid, or None when a real Prefect server is configured."""
    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    process = server.server_process
    if process is None:
        return None
    if process.pid not in _watchdogs:
        _watchdogs[process.pid] = watch(process.pid, os.getpid())
        logger.debug("Prefect's temporary server (pid %d) stops when pid %d does", process.pid, os.getpid())
    return process.pid
