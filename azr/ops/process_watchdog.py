"""Stop a helper process when the process it serves dies, however it dies (kill -9 included).

For helpers that a library starts without a way to ask the kernel for a death signal
(PR_SET_PDEATHSIG needs a hook in the child before exec): Prefect's temporary API server, which
`azr train` uses, is started by Prefect with a plain `subprocess.Popen` and would otherwise
outlive a killed run, with no parent, until killed by hand. The watchdog is a small process of
its own (a thread would die with its process): it waits on pidfds of both (Linux 5.3+; elsewhere
it polls once a second) and stops the helper (SIGTERM, SIGKILL after a grace period) when the
served process is gone. It exits when the helper exits first.

    python -m azr.ops.process_watchdog SERVED_PID HELPER_PID
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

GRACE_S = 5.0  # the helper's time to shut down after SIGTERM
_POLL_S = 1.0


def watch(helper_pid: int, served_pid: int | None = None) -> subprocess.Popen:
    """Start a watchdog that stops `helper_pid` once `served_pid` (default: this process) dies."""
    return subprocess.Popen(
        [sys.executable, "-m", "azr.ops.process_watchdog", str(served_pid or os.getpid()), str(helper_pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True,
        start_new_session=True,  # a terminal's Ctrl-C (sent to the foreground group) must not end it
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pidfd(pid: int) -> int | None:
    """A pidfd of `pid`, -1 when it is already gone, None where pidfds are not available."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except (AttributeError, OSError):
        return None


def _wait_for_either(served: int, helper: int) -> bool:
    """Block until one of the two exits; True when the served process went first."""
    served_fd, helper_fd = _pidfd(served), _pidfd(helper)
    if served_fd == -1 or helper_fd == -1:
        return helper_fd != -1
    if served_fd is not None and helper_fd is not None:
        ready, _, _ = select.select([served_fd, helper_fd], [], [])
        return helper_fd not in ready
    while _alive(served) and _alive(helper):
        time.sleep(_POLL_S)
    return _alive(helper)


def _signal(pid: int, fd: int | None, number: int) -> bool:
    """Send `number` (through the pidfd where there is one: never to a recycled pid); False when gone."""
    try:
        if fd is not None and fd >= 0:
            signal.pidfd_send_signal(fd, number)
        else:
            os.kill(pid, number)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int) -> None:
    fd = _pidfd(pid)
    if fd == -1 or not _signal(pid, fd, signal.SIGTERM):
        return
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        if fd is not None and fd >= 0:
            if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return
        elif not _alive(pid):
            return
        else:
            time.sleep(0.1)
    _signal(pid, fd, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(a.isdigit() for a in argv):
        print("usage: python -m azr.ops.process_watchdog SERVED_PID HELPER_PID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run; the run's exit stops us
    served, helper = int(argv[0]), int(argv[1])
    if _wait_for_either(served, helper):
        _stop(helper)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
