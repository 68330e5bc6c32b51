"""Child processes that die with the process that started them, started without a `preexec_fn`.

The engine's launcher and a vLLM server hold gigabytes; when the controller dies, even by
SIGKILL, they must go too. Linux's parent-death signal (PR_SET_PDEATHSIG) does that, but it has
to be asked for in the child between fork and exec, and a `preexec_fn` there can deadlock in a
threaded parent (only async-signal-safe calls are allowed after fork; the controller runs
Prefect's, MLflow's and its own threads). So the child first runs a short Python shim that asks
for the signal and then execs the real command; the request survives execve.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Run by this Python in the child, before it execs the real command: the parent-death signal is set
# in the child, after fork, without a `preexec_fn` (which can deadlock in a threaded parent:
# only async-signal-safe calls are allowed between fork and exec). The signal survives execve.
_DEATH_SIGNAL_SHIM = (
    "import ctypes, os, sys\n"
    "parent = int(sys.argv[1])\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]), 0, 0, 0)\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != parent: os._exit(1)\n"  # the parent died before the request took effect
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def with_parent_death_signal(argv: Sequence[str], signum: int) -> list[str]:
    """`argv` started through a shim that asks the kernel for `signum` when this process (the
    thread that starts it) goes away, even by SIGKILL, so no engine is left holding memory
    (Linux; elsewhere `argv` as it is, and `stop()` and the exit hook are all)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-c", _DEATH_SIGNAL_SHIM, str(os.getpid()), str(int(signum)), *argv]
