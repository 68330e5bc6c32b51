"""Math answer equivalence with `math-verify`, every check in a separate process under a limit.

`math-verify` parses LaTeX into sympy and compares values (numbers, fractions, `\\dfrac` and
`\\frac`, `27` and `27.0`, intervals, tuples, sets, percentages and units normalised), but a
crafted answer can make sympy run for minutes or eat memory. So the calling process never
parses an answer: checks go to worker processes (started with `spawn`, memory-capped), each
answer is given `timeout_s`, and a worker that does not answer in time is killed and replaced;
that check is a `timeout`, which counts as wrong.

A gold answer is parsed as `$gold$`, a prediction as `\\boxed{prediction}`. With several gold
answers (OlympiadBench multi-answer problems) the prediction is split at top-level commas and
must match the gold parts one to one, in any order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

DEFAULT_TIMEOUT_S = 10.0
WORKER_MEMORY_MB = 4096


@dataclass(frozen=True)
class MathCheck:
    gold: tuple[str, ...]  # one part, or several that must all be matched
    prediction: tuple[str, ...]


@dataclass(frozen=True)
class MathVerdict:
    correct: bool
    status: str  # ok | timeout | error
    error: str = ""


def _quiet_math_verify() -> None:
    """math-verify logs "Timeout is disabled ..." on its first call without a timeout of its own;
    the limit here is the worker process's (MathJudge), so that warning is noise for the user."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def _equivalent(gold: str, prediction: str) -> bool:
    from math_verify import parse, verify

    _quiet_math_verify()

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    predicted = parse(f"\\boxed{{{prediction}}}", parsing_timeout=None)
    if not gold_parsed or not predicted:
        return gold.strip() == prediction.strip() and bool(gold.strip())
    return bool(verify(gold_parsed, predicted, timeout_seconds=None))


def judge(check: MathCheck) -> bool:
    """The verdict of one check, computed in this process (the workers call it)."""
    if len(check.gold) != len(check.prediction) or not check.prediction:
        return False
    if len(check.gold) == 1:
        return _equivalent(check.gold[0], check.prediction[0])
    unused = list(check.prediction)
    for gold in check.gold:
        match = next((i for i, p in enumerate(unused) if _equivalent(gold, p)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def _worker_main(connection: Connection, memory_mb: int) -> None:
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import math_verify  # noqa: F401 - imported once, before the first check

    while True:
        try:
            item = connection.recv()
        except EOFError:
            return
        if item is None:
            return
        try:
            connection.send(("ok", judge(item), ""))
        except MemoryError:
            connection.send(("error", False, "MemoryError: the answer needed more than the memory limit"))
        except Exception as exc:  # noqa: BLE001 - any parser failure is a wrong answer with a reason
            connection.send(("error", False, f"{type(exc).__name__}: {str(exc)[:200]}"))


class _Worker:
    def __init__(self, context: Any, memory_mb: int) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, memory_mb), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.connection.close()

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.connection.close()


class MathChecker:
    """Worker processes that judge math answers; use as a context manager."""

    def __init__(self, workers: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 memory_mb: int = WORKER_MEMORY_MB) -> None:
        self.count = max(1, workers or min(4, os.cpu_count() or 1))
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def _start(self) -> _Worker:
        return _Worker(self._context, self.memory_mb)

    def check(self, checks: Sequence[MathCheck]) -> list[MathVerdict]:
        """One verdict per check, in order."""
        import time

        results: list[MathVerdict | None] = [None] * len(checks)
        pending = list(range(len(checks)))[::-1]
        while len(self._workers) < min(self.count, max(1, len(checks))):
            self._workers.append(self._start())
        busy: dict[Connection, _Worker] = {}

        def assign(worker: _Worker) -> None:
            if pending:
                index = pending.pop()
                worker.task, worker.deadline = index, time.monotonic() + self.timeout_s
                worker.connection.send(checks[index])
                busy[worker.connection] = worker

        for worker in self._workers:
            assign(worker)
        while busy:
            soonest = min(w.deadline for w in busy.values())
            ready = wait(list(busy), timeout=max(0.0, soonest - time.monotonic()))
            for connection in ready:
                worker = busy.pop(connection)  # type: ignore[arg-type]
                task = worker.task
                try:
                    status, correct, error = worker.connection.recv()
                except (EOFError, OSError):
                    status, correct, error = "error", False, "the checker process died"
                    worker = self._replace(worker)
                if task is not None:
                    results[task] = MathVerdict(bool(correct), status, error)
                assign(worker)
            now = time.monotonic()
            for connection, worker in list(busy.items()):
                if worker.deadline <= now and connection not in ready:
                    busy.pop(connection)
                    results[worker.task] = MathVerdict(  # type: ignore[index]
                        False, "timeout", f"math-verify took longer than {self.timeout_s:g} s")
                    assign(self._replace(worker))
        return [r if r is not None else MathVerdict(False, "error", "not checked") for r in results]

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = self._start()
        fresh.task = worker.task
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def __enter__(self) -> MathChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
