"""What to tell the user after `azr train` failed: resume advice only where resuming can work.

"`azr train --resume X` continues it" is true only when X is a run directory whose run really
started (its config.yaml is there and readable) and that this user can still write to. An
error raised before that (the run directory is a file, is read-only, lies under /proc, the
model does not exist before anything was written) gets advice about the cause instead, since
a resume would fail the same way.
"""

from __future__ import annotations

import os
from pathlib import Path


def resumable(target: Path) -> bool:
    """True when `azr train --resume target` can pick the run up."""
    from azr.pipeline.run_dir import RunDir, RunDirError

    if not target.is_dir() or not (target / "config.yaml").is_file():
        return False
    if not os.access(target, os.W_OK | os.X_OK):
        return False
    try:
        RunDir(target).read_config()
    except RunDirError:
        return False
    return True


def failure_advice(exc: BaseException, target: Path, *, model_problem: bool = False) -> str:
    """The sentence that follows the error message (without the message itself)."""
    if resumable(target):
        change = ("after fixing the model setting, continue it with "
                  f"`azr train --resume {target} --set model.name_or_path=... --force`") if model_problem else (
            f"`azr train --resume {target}` continues it, with --set KEY=VALUE --force to change a setting")
        return f"what was done is kept in {target}: {change}"
    if isinstance(exc, OSError) and not model_problem:
        return (f"no run was started in {target}; choose a --run-dir that can be created and written "
                "(an existing folder must be empty)")
    return f"no run was started in {target}; fix the cause above and start it again"
