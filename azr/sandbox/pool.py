"""`SandboxExecutor`: the real `azr.sandbox.api.Executor`, a pool of isolated sandbox workers.

Each worker is one isolated sandbox (see isolation.py) holding a fork server per hash seed
(see worker.py); a task costs about one fork. Batches are split into chunks that the workers
take from a queue, one thread per worker, so all cores are busy. A worker that dies or hangs
is killed with its whole sandbox and replaced; its chunk is answered with errors, never lost.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from azr.config.schema import AZRConfig, SandboxConfig
from azr.sandbox.api import (
    AbductionCheck,
    CallResult,
    Check,
    DeductionCheck,
    ExecStatus,
    InductionCheck,
    ProgramRun,
    RunResult,
    Verdict,
)
from azr.sandbox import answer_rules
from azr.sandbox import worker as worker_module
from azr.sandbox.packages import package_paths
from azr.sandbox.isolation import Launch, choose_isolation, hidden_ancestor, interpreter, make_launch, task_uid_for

logger = logging.getLogger(__name__)

WORKER_SOURCE = Path(worker_module.__file__).read_text(encoding="utf-8")
RULES_SOURCE = Path(answer_rules.__file__).read_text(encoding="utf-8")
_START_TIMEOUT_S = 60.0


class SandboxError(RuntimeError):
    """The sandbox itself failed (not a program in it): it could not start or answer."""


@dataclass(frozen=True)
class Limits:
    """What each task child gets; sent to the sandbox as JSON."""

    timeout_s: float
    memory_mb: int
    cpu_time_s: int
    file_size_mb: int
    open_files: int
    processes: int
    max_output_chars: int
    max_stdout_chars: int
    output_overflow: str = "truncate"
    numpy_repr: str = "legacy"

    @classmethod
    def from_config(cls, config: SandboxConfig) -> Limits:
        return cls(
            timeout_s=config.timeout_s,
            memory_mb=config.memory_mb,
            cpu_time_s=config.cpu_time_s,
            file_size_mb=config.file_size_mb,
            open_files=config.open_files,
            processes=config.max_processes,
            max_output_chars=config.max_output_chars,
            max_stdout_chars=config.max_stdout_chars,
            output_overflow=config.output_limit,
            numpy_repr=config.numpy_repr,
        )


class _Worker:
    """One sandbox: its process (bwrap or unshare or plain) and the pipe protocol to it."""

    def __init__(self, launch_for: Callable[[bool], Launch], limits: Limits, determinism: bool) -> None:
        self.launch_for = launch_for
        self.limits = limits
        self.determinism = determinism
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        launch: Launch = self.launch_for(self.determinism)
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker never blocks
        self.process = subprocess.Popen(
            launch.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            env=launch.env, close_fds=True, start_new_session=True,
        )
        try:
            ready = worker_module.receive_json(self.process.stdout.fileno(), time.monotonic() + _START_TIMEOUT_S)
        except TimeoutError:
            ready = None
        if not isinstance(ready, dict) or not ready.get("ready"):
            detail = ready.get("error") if isinstance(ready, dict) and ready.get("error") else self._stderr_tail()
            self.stop()
            raise SandboxError(f"the sandbox worker did not start ({launch.isolation}): {detail or 'no output'}")

    def _stderr_tail(self) -> str:
        if self.process is None:
            return ""
        self.process.kill()
        self.process.wait()
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-2000:]

    def request(self, tasks: list[dict]) -> list[dict]:
        """Send a chunk and wait for its results; restart the sandbox if it fails."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        # A task may run one child per input (sandbox.process_per_input) and a gold child.
        parts = sum(max(1, len(t.get("inputs", ()))) + 1 for t in tasks)
        budget = parts * (2 * self.limits.timeout_s + 2.0) + 10.0
        try:
            worker_module.send_json(self.process.stdin.fileno(), {"tasks": tasks})
            results = worker_module.receive_json(self.process.stdout.fileno(), time.monotonic() + budget)
        except (TimeoutError, OSError, ValueError) as exc:
            results, problem = None, f"{type(exc).__name__}: {exc}"
        else:
            problem = "the sandbox worker exited"
        if not isinstance(results, list) or len(results) != len(tasks):
            logger.warning("sandbox worker failed (%s); restarting it", problem)
            self.stop()
            return [{"calls": [{"status": "error", "error": f"sandbox failure: {problem}"}],
                     "matched": 0, "total": 0, "status": "error", "error": f"sandbox failure: {problem}",
                     "duration_ms": 0.0} for _ in tasks]
        return results

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.process = None


class SandboxExecutor:
    """Runs untrusted programs and solver checks in isolated sandboxes, in parallel.

    Use as a context manager, or call `close()`: workers are processes.
    """

    def __init__(self, config: SandboxConfig | None = None, workers: int | None = None, banned_imports: Sequence[str] = ()) -> None:
        self.config = config or SandboxConfig()
        self.limits = Limits.from_config(self.config)
        self.banned_imports = list(banned_imports)
        count = workers or self.config.workers or os.cpu_count() or 1
        self.isolation = choose_isolation(self.config.isolation)
        self.packages = package_paths(self.config.packages)
        self._workers = [_Worker(self._launch, self.limits, self.config.check_determinism) for _ in range(count)]
        self._lock = threading.Lock()
        self._closed = False
        for worker in self._workers:  # fail early and clearly if the sandbox cannot start
            worker.start()

    @classmethod
    def from_run_config(cls, config: AZRConfig) -> SandboxExecutor:
        """The executor of a run: its sandbox settings and the banned imports of its tasks."""
        return cls(config.sandbox, banned_imports=config.tasks.banned_imports)

    def _launch(self, determinism: bool) -> Launch:
        config = {
            "determinism": determinism,
            "cross_process": self.config.determinism == "two_processes",
            "hash_seed": self.config.hash_seed,
            "limits": {**self.limits.__dict__, "task_uid": task_uid_for(self.isolation),
                       "private_tmp": self.isolation != "none",
                       "packages": {"names": list(self.config.packages), "paths": self.packages}},
            "isolate_filesystem": self.isolation == "namespaces",
            "prefix": os.path.realpath(sys.base_prefix),
            "keep": self.packages,
            "hide": hidden_ancestor(self.isolation),
            "separate_inputs": self.config.process_per_input,
            "rules_source": RULES_SOURCE,
        }
        argv = [interpreter(), "-I", "-S", "-B", "-c", WORKER_SOURCE, "worker", json.dumps(config)]
        return make_launch(self.isolation, argv, self.packages)

    # ------------------------------------------------------------------------------ batching

    def _execute(self, tasks: list[dict]) -> list[dict]:
        if self._closed:
            raise SandboxError("the executor is closed")
        if not tasks:
            return []
        chunk = max(1, min(64, math.ceil(len(tasks) / (4 * len(self._workers)))))
        pending: queue.Queue[tuple[int, list[dict]]] = queue.Queue()
        for start in range(0, len(tasks), chunk):
            pending.put((start, tasks[start : start + chunk]))
        results: list[dict | None] = [None] * len(tasks)

        def drain(worker: _Worker) -> None:
            while True:
                try:
                    start, part = pending.get_nowait()
                except queue.Empty:
                    return
                for offset, result in enumerate(worker.request(part)):
                    results[start + offset] = result

        with self._lock:  # one batch at a time: the workers are shared
            threads = [threading.Thread(target=drain, args=(w,), daemon=True) for w in self._workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return results  # type: ignore[return-value]

    def run(self, runs: Sequence[ProgramRun]) -> list[RunResult]:
        tasks = [
            {"kind": "run", "program": r.program, "inputs": list(r.inputs),
             "determinism": r.check_determinism and self.config.check_determinism, "banned": self.banned_imports}
            for r in runs
        ]
        return [_run_result(result, len(run.inputs)) for run, result in zip(runs, self._execute(tasks))]

    def verify(self, checks: Sequence[Check]) -> list[Verdict]:
        rule = self.config.exception_rule
        return [_verdict(result) for result in self._execute([dict(_check_task(c), exception_rule=rule) for c in checks])]

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            worker.stop()

    def __enter__(self) -> SandboxExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()


def _check_task(check: Check) -> dict:
    if isinstance(check, DeductionCheck):
        return {"kind": "deduction", "gold_output": check.gold_output, "answer": check.answer,
                "program": check.program, "gold_input": check.gold_input, "comparison": check.comparison}
    if isinstance(check, AbductionCheck):
        return {"kind": "abduction", "program": check.program, "gold_output": check.gold_output,
                "answer_input": check.answer_input, "gold_input": check.gold_input, "comparison": check.comparison}
    if isinstance(check, InductionCheck):
        return {"kind": "induction", "candidate_program": check.candidate_program, "inputs": list(check.inputs),
                "outputs": list(check.outputs), "imports": list(check.imports), "gold_program": check.gold_program,
                "comparison": check.comparison}
    raise TypeError(f"not a check: {type(check).__name__}")


def _status(value: object) -> ExecStatus:
    try:
        return ExecStatus(str(value))
    except ValueError:
        return ExecStatus.ERROR


def _run_result(result: dict, inputs: int) -> RunResult:
    calls = [CallResult(_status(c.get("status")), c.get("output", ""), c.get("error", "")) for c in result.get("calls", [])]
    if len(calls) != inputs:  # a whole-task failure answers every input with it
        first = calls[0] if calls else CallResult(ExecStatus.ERROR, "", "no result")
        calls = [first] * inputs
    return RunResult(tuple(calls), float(result.get("duration_ms", 0.0)))


def _verdict(result: dict) -> Verdict:
    if "matched" not in result:  # the sandbox answered with a bare failure
        call = (result.get("calls") or [{}])[0]
        return Verdict(0, 0, _status(call.get("status", "error")), call.get("error", ""))
    return Verdict(int(result["matched"]), int(result["total"]), _status(result.get("status")), result.get("error", ""))
