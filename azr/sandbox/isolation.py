"""How a sandbox worker is started: bubblewrap, Linux namespaces, or (explicitly) nothing.

Inside, the file system is read-only but for a private /tmp (the interpreter and the package
directories of `sandbox.packages` are bound again on top of it when they live under /tmp), there is no network (a new
network namespace has only a loopback), the process ids are private (programs cannot see or
signal the orchestrator), the environment is empty, and task children run as an unprivileged
uid when the orchestrator is root (RLIMIT_NPROC is not enforced for root).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Isolation = Literal["bubblewrap", "namespaces", "none"]
NOBODY_UID = 65534
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
# Capabilities the trusted worker keeps in a root sandbox: to drop task children to the
# unprivileged uid, hand them their scratch directory, and kill and clean up after them.
_ROOT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_FOWNER")


class IsolationUnavailable(RuntimeError):
    """No way to isolate untrusted programs here; the message says what to install or set."""


@dataclass(frozen=True)
class Launch:
    """The command that starts one worker, with its environment."""

    argv: list[str]
    env: dict[str, str]
    isolation: Isolation


def interpreter() -> str:
    """The real base interpreter: the sandbox runs it with -I -S, without the venv."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _blocked_ancestor(path: str) -> str | None:
    """The first ancestor directory that an unprivileged user cannot traverse (e.g. /root)."""
    current = Path(path)
    for parent in reversed(current.parents):
        if parent == Path("/"):
            continue
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return str(parent)
    return None


def bubblewrap_path() -> str | None:
    return shutil.which("bwrap")


@lru_cache(maxsize=4)
def bubblewrap_works(bwrap: str, as_root: bool) -> bool:
    """Probe once: some kernels or containers refuse the namespaces bubblewrap needs."""
    argv = [bwrap, *_bubblewrap_flags(as_root), "--", "/bin/true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _bubblewrap_flags(as_root: bool) -> list[str]:
    flags = ["--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--tmpfs", "/tmp",
             "--dev", "/dev", "--proc", "/proc", "--clearenv", "--setenv", "PATH", SANDBOX_PATH,
             "--chdir", "/"]
    if as_root:
        # No user namespace: the worker stays real root with a few capabilities, and task
        # children become a real unprivileged uid (so RLIMIT_NPROC holds).
        flags += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                  "--cap-drop", "ALL"]
        for cap in _ROOT_CAPS:
            flags += ["--cap-add", cap]
    else:
        flags += ["--unshare-all"]
    return flags


def under_private_tmp(paths: list[str]) -> list[str]:
    """The directories among `paths` that the sandbox's fresh /tmp would hide (a virtual
    environment or a checkout under /tmp): they are bound again, read-only, on top of it."""
    return [path for path in paths if Path("/tmp") in Path(path).parents]


def _bind_again(path: str, below: str) -> list[str]:
    """bwrap flags that show `path` (read-only) inside a fresh tmpfs mounted at `below`."""
    flags: list[str] = []
    for parent in reversed(Path(path).parents):  # traversable directories down to it
        if len(parent.parts) > len(Path(below).parts):
            flags += ["--perms", "0755", "--dir", str(parent)]
    return flags + ["--ro-bind", path, path]


def bubblewrap_launch(bwrap: str, worker_argv: list[str], keep: list[str] | None = None) -> Launch:
    as_root = os.geteuid() == 0
    flags = _bubblewrap_flags(as_root)
    prefix = os.path.realpath(sys.base_prefix)
    for path in under_private_tmp([prefix, *(keep or [])]):  # after `--tmpfs /tmp`, so on top of it
        flags += _bind_again(path, "/tmp")
    if as_root:
        blocked = _blocked_ancestor(prefix)
        if blocked:  # e.g. a pyenv Python under /root: hide /root, show only the interpreter
            flags += ["--perms", "0755", "--tmpfs", blocked]
            # ... and the package directories programs may import from (sandbox.packages)
            for path in [prefix, *[p for p in keep or [] if Path(blocked) in Path(p).parents]]:
                flags += _bind_again(path, blocked)
    return Launch([bwrap, *flags, "--", *worker_argv], {}, "bubblewrap")


def namespaces_launch(worker_argv: list[str]) -> Launch:
    """Without bubblewrap: `unshare` from util-linux for the namespaces; the worker makes the
    file system read-only itself (see worker.isolate_filesystem)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise IsolationUnavailable("neither bwrap nor unshare is installed")
    as_root = os.geteuid() == 0
    flags = ["--fork", "--pid", "--mount-proc", "--net", "--ipc", "--uts", "--mount", "--kill-child"]
    if not as_root:
        flags.append("--map-root-user")
    return Launch([unshare, *flags, "--", *worker_argv], {"PATH": SANDBOX_PATH}, "namespaces")


@lru_cache(maxsize=2)
def namespaces_work(as_root: bool) -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    flags = ["--fork", "--pid", "--mount-proc", "--net", "--ipc", "--uts", "--mount"]
    if not as_root:
        flags.append("--map-root-user")
    try:
        return subprocess.run([unshare, *flags, "--", "/bin/true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_isolation(setting: str) -> Isolation:
    """The isolation `sandbox.isolation` (auto | bubblewrap | namespaces | none) gives here."""
    as_root = os.geteuid() == 0
    bwrap = bubblewrap_path()
    if setting in ("auto", "bubblewrap") and bwrap and bubblewrap_works(bwrap, as_root):
        return "bubblewrap"
    if setting == "bubblewrap":
        reason = "bwrap is not installed" if not bwrap else "bwrap cannot create its namespaces here"
        raise IsolationUnavailable(
            f"sandbox.isolation is 'bubblewrap' but {reason}. Install it (sudo apt-get install "
            "bubblewrap), or choose sandbox.isolation: namespaces"
        )
    if setting in ("auto", "namespaces") and namespaces_work(as_root):
        return "namespaces"
    if setting == "none":
        logger.warning(
            "sandbox.isolation is 'none': model-written programs run without namespaces, with "
            "only rlimits and timeouts. Do not do this on a machine with anything to lose."
        )
        return "none"
    raise IsolationUnavailable(
        "no isolation is possible on this machine: bubblewrap is missing or refused, and "
        "Linux namespaces cannot be created. Install bubblewrap (sudo apt-get install "
        "bubblewrap; `make setup` does it), or, knowing that model-written code will then run "
        "unisolated, set sandbox.isolation: none"
    )


def task_uid_for(isolation: Isolation) -> int | None:
    """Task children drop to `nobody` when the worker is real root inside its sandbox."""
    return NOBODY_UID if isolation != "none" and os.geteuid() == 0 else None


def hidden_ancestor(isolation: Isolation) -> str | None:
    """For namespaces mode as root: the directory the worker must hide and re-bind."""
    if isolation != "namespaces" or task_uid_for(isolation) is None:
        return None
    return _blocked_ancestor(os.path.realpath(sys.base_prefix))


def make_launch(isolation: Isolation, worker_argv: list[str], keep: list[str] | None = None) -> Launch:
    """`keep`: directories (package locations) that must stay visible, read-only."""
    if isolation == "bubblewrap":
        bwrap = bubblewrap_path()
        assert bwrap is not None
        return bubblewrap_launch(bwrap, worker_argv, keep)
    if isolation == "namespaces":
        return namespaces_launch(worker_argv)
    return Launch(list(worker_argv), {"PATH": SANDBOX_PATH}, "none")
