"""azr.ops.process_watchdog: a helper started by a process is stopped when that process dies by kill -9
(real processes: the served one, its helper, the watchdog), and the watchdog leaves when the
helper ends first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The served process: starts a helper (a long sleep) and its watchdog, prints the helper's pid.
SERVED = """
import subprocess, sys, time
from azr.ops.process_watchdog import watch
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
watchdog = watch(helper.pid)
print(helper.pid, watchdog.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _start() -> tuple[subprocess.Popen, int, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    served = subprocess.Popen([sys.executable, "-c", SERVED], stdout=subprocess.PIPE, text=True, env=env)
    helper, watchdog = map(int, served.stdout.readline().split())
    return served, helper, watchdog


def test_the_helper_dies_with_a_process_killed_by_sigkill() -> None:
    served, helper, watchdog = _start()
    time.sleep(0.5)  # the watchdog holds its pidfds
    assert _alive(helper) and _alive(watchdog)
    served.send_signal(signal.SIGKILL)  # no exit handlers run
    served.wait()
    assert _gone_within(helper, 10), "the helper outlived the process it served"
    assert _gone_within(watchdog, 10)


def test_the_watchdog_leaves_when_the_helper_ends_first() -> None:
    served, helper, watchdog = _start()
    time.sleep(0.5)
    os.kill(helper, signal.SIGTERM)
    assert _gone_within(watchdog, 10)
    assert served.poll() is None  # the served process is left alone
    served.kill()
    served.wait()
