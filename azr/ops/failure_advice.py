"""What to tell the user after a command failed: the failure's own reason, once, and after
`azr train` resume advice only where resuming can work.

"`azr train --resume X` continues it" is true only when X is a run directory whose run really
started (its config.yaml is there and readable) and that this user can still write to. An
error raised before that (the run directory is a file, is read-only, lies under /proc, the
model does not exist before anything was written) gets advice about the cause instead, since
a resume would fail the same way.
"""

from __future__ import annotations

import os
import re
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


# ------------------------------------------------------------------ the user's view of a failure
#
# One rule for every command: a failure reaches the user as its own reason (the error's message,
# a rank's exception, the line of an engine log that says why), never as a traceback. The kinds
# below are named once here; azr/cli/output.py applies the rule to every command and `azr train`
# adds the resume advice above.

_WRAPPERS = (  # exceptions that only say "a child failed": the child's own line is the reason
    "subprocess.CalledProcessError", "CalledProcessError", "ChildFailedError",
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError",
    "torch.distributed.checkpoint.api.CheckpointException", "CheckpointException",
)
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Interrupt|Exit)|[A-Z]\w*Error\w*)(?::\s?(.*))?$")


def own_reason(exc: BaseException) -> str:
    """The exception's own message as one paragraph, its type named where the message alone
    does not say what went wrong; a wrapper (torch's CheckpointException, a failed child
    process) gives way to the exceptions it wraps."""
    failures = getattr(exc, "failures", None)  # torch.distributed.checkpoint.api.CheckpointException
    if isinstance(failures, dict) and failures:
        reasons = {}
        for rank, pair in sorted(failures.items()):
            inner = pair[0] if isinstance(pair, tuple) else pair
            reasons[rank] = own_reason(inner) if isinstance(inner, BaseException) else str(inner)
        if len(set(reasons.values())) == 1:  # the ranks' own prefix is added where they are gathered
            return next(iter(reasons.values()))
        return "; ".join(f"rank {rank}: {reason}" for rank, reason in reasons.items())
    from azr.config.loading import ConfigError
    from azr.pipeline.run_dir import RunDirError

    message = str(exc).strip()
    if isinstance(exc, (ConfigError, RunDirError)) and message:
        return message  # written for the user already
    if isinstance(exc, OSError) and exc.strerror and exc.filename:  # "[Errno 2] No such file..." reads as noise
        return f"{exc.strerror}: {exc.filename}"
    azr_error = type(exc).__module__.startswith("azr.")
    return message if azr_error and message else f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def reason_in_log(path: Path) -> str | None:
    """The line of a process log that says why it failed: the last exception a traceback ended
    with that is not a wrapper's "a child failed" (accelerate's CalledProcessError, torchrun's
    ChildFailedError); None when the log names none (a rank killed by a signal)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = None
    in_traceback = False
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if not in_traceback or line.startswith((" ", "\t")) or not line.strip():
            continue
        match = _EXCEPTION_LINE.match(line.strip())
        if match is None:
            continue
        in_traceback = False
        name = line.split(":", 1)[0].strip()
        if name in _WRAPPERS or name.rsplit(".", 1)[-1] in _WRAPPERS:
            continue
        text = line.strip()
        for more in lines[index + 1:index + 4]:  # a multi-line message (rare) continues unindented
            if not more.strip() or more.startswith(("Traceback", " ", "\t", "The above", "During handling")):
                break
            text += " " + more.strip()
        found = text
    return found


def log_reason_or_tail(path: Path, lines: int = 6) -> str:
    """What a failed process's log says: its own reason, else its last lines without traceback
    frames (a progress bar or a signal's note is often all there is)."""
    reason = reason_in_log(path)
    if reason is not None:
        return f"its error: {reason} (the whole log: {path})"
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"no log at {path}"
    kept = [line for line in text if line.strip() and not line.startswith((" ", "\t", "Traceback"))]
    return f"last lines of {path}:\n" + "\n".join(kept[-lines:])


def input_error_types() -> tuple[type[BaseException], ...]:
    """Errors in what the user gave (settings, files, run directories): exit code 2."""
    from azr.config.loading import ConfigError
    from azr.eval.benchmarks.problems import EvalDataError
    from azr.pipeline.run_dir import RunDirError

    return (ConfigError, RunDirError, EvalDataError)


def model_load_error_types() -> tuple[type[BaseException], ...]:
    """What loading a model's files can raise besides the project's own errors: damaged or foreign
    safetensors, JSON or pickle files, missing files."""
    import json
    import pickle

    from azr.engine.models.sources import ModelSourceError

    kinds: list[type[BaseException]] = [ModelSourceError, OSError, json.JSONDecodeError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors ships with transformers
        pass
    return tuple(kinds)


def failure_types() -> tuple[type[BaseException], ...]:
    """Failures of the engine, the model's files, the sandbox, vLLM or the disk: exit code 1."""
    from azr.engine.protocol import EngineError
    from azr.engine.rollout.vllm.server import VLLMError
    from azr.ops.disk_use import DiskSpaceError
    from azr.sandbox import IsolationUnavailable, SandboxError

    return (EngineError, VLLMError, DiskSpaceError, IsolationUnavailable, SandboxError, *model_load_error_types())


def is_model_problem(exc: BaseException) -> bool:
    """A failure of the model's files or source (the advice then is to fix model.name_or_path);
    an OSError alone may as well be the run directory's."""
    kinds = tuple(kind for kind in model_load_error_types() if kind is not OSError)
    return isinstance(exc, kinds) and (not isinstance(exc, OSError) or type(exc).__module__.startswith("azr."))


def exit_code(exc: BaseException) -> int:
    """2 for bad input, 1 for everything else that failed."""
    return 2 if isinstance(exc, input_error_types()) else 1


def save_traceback(exc: BaseException) -> Path | None:
    """An unexpected error's traceback, kept in a file for a bug report (the terminal gets the reason)."""
    import tempfile
    import traceback

    try:
        folder = Path(tempfile.gettempdir()) / "azr-errors"
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="traceback-", suffix=".txt", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("".join(traceback.format_exception(exc)))
        return Path(name)
    except OSError:
        return None


def user_message(exc: BaseException) -> str:
    """The one paragraph a command prints for an exception that reached it."""
    reason = own_reason(exc)
    if isinstance(exc, input_error_types()) or isinstance(exc, failure_types()):
        return reason
    saved = save_traceback(exc)
    where = f"; its traceback is in {saved}" if saved else ""
    return f"{reason} (an unexpected error{where}: please report it with that file)"
