"""The paper's results table in one command: every benchmark of a suite, one model load.

    azr eval run --suite paper --model M [--benchmarks humaneval-plus,aime24] [--limit 20]

Each benchmark is an ordinary evaluation directory (OUT/<benchmark>/, the stages of
azr/eval/runner.py, so an interrupted suite resumes where it stopped); the model is loaded once
and answers them all. The suite writes the table (`table.json`, `table.md`), every per-problem
verdict in one `results.parquet`, and an MLflow run (nested under the training run when the
model is a run directory) with one child run per benchmark.

Table (docs/algorithm.md §11.1): pass@1 in % per benchmark; Code Avg = mean(HumanEval+, MBPP+, LCB), Math
Avg = mean of the six math benchmarks, Total = mean(Code Avg, Math Avg). HumanEval+ and MBPP+
count base+plus tests, with the base-only figure beside them. With part of a suite the averages
are over the benchmarks that ran, and the table says how many.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from azr.pipeline.atomic_io import atomic_write_json, atomic_write_text, write_parquet_atomic
from azr.eval import runner
from azr.eval.benchmarks.registry import BENCHMARKS, expand_benchmarks
from azr.eval.benchmarks.downloads import data_dir as default_data_dir
from azr.eval.benchmarks.problems import EvalDataError
from azr.eval.results import RESULTS_FILE, read_results, results_table
from azr.eval.targets import resolve_target

TABLE_JSON, TABLE_MD = "table.json", "table.md"
TABLE_LABELS = {
    "humaneval-plus": "HumanEval+", "mbpp-plus": "MBPP+", "livecodebench": "LCB", "aime24": "AIME24",
    "aime25": "AIME25", "amc23": "AMC23", "math500": "MATH500", "minerva-math": "Minerva", "olympiadbench": "Olympiad",
}
SUITE_KEY = "paper"

# Where each benchmark's file sits in a data directory (also the download cache's layout).
DATA_DIR_NAMES: dict[str, tuple[str, ...]] = {
    "humaneval-plus": ("HumanEvalPlus-v0.1.10.jsonl.gz", "HumanEvalPlus.jsonl.gz", "HumanEvalPlus.jsonl"),
    "mbpp-plus": ("MbppPlus-v0.2.0.jsonl.gz", "MbppPlus.jsonl.gz", "MbppPlus.jsonl"),
    "livecodebench": ("livecodebench",),
    "aime24": ("aime24/test.jsonl",), "aime25": ("aime25/test.jsonl",), "amc23": ("amc23/test.jsonl",),
    "math500": ("math500/test.jsonl",), "minerva-math": ("minerva_math/test.jsonl",),
    "olympiadbench": ("olympiadbench/test.jsonl",),
}


def data_in_directory(benchmark: str, directory: str | Path | None) -> str | None:
    """The benchmark's file (or LiveCodeBench's folder) in a data directory, if it is there."""
    if directory is None:
        return None
    for name in DATA_DIR_NAMES.get(benchmark, ()):
        candidate = Path(directory).expanduser() / name
        if candidate.exists():
            return str(candidate)
    return None


@dataclass(frozen=True)
class SuiteRequest:
    suite: str | None  # "paper", or None for just `benchmarks`
    benchmarks: tuple[str, ...]  # a part of the suite (or any benchmarks); empty: the whole suite
    base: runner.EvalRequest  # model, limit, prompt, samples, ... shared by every benchmark
    data: dict[str, str]  # benchmark -> file, hub id or folder
    data_dir: str | None = None


@dataclass(frozen=True)
class TableRow:
    benchmark: str
    family: str
    problems: int
    score: float  # pass@1 in %
    base: float | None  # base-only (EvalPlus) in %
    pass_at_k: dict[str, float] | None = None


def chosen_benchmarks(request: SuiteRequest) -> list[str]:
    if request.suite is not None and request.suite not in ("paper",):
        raise EvalDataError(f"--suite {request.suite!r} is unknown; the suite is: paper")
    names = list(request.benchmarks) or [request.suite or SUITE_KEY]
    chosen = expand_benchmarks(names)
    if request.suite is not None:
        members = expand_benchmarks([request.suite])
        outside = [n for n in chosen if n not in members]
        if outside:
            raise EvalDataError(f"--benchmarks {', '.join(outside)} are not in the {request.suite} suite ({', '.join(members)})")
    return chosen


def suite_dir(request: SuiteRequest) -> Path:
    if request.base.out_dir:
        return Path(request.base.out_dir)
    target = resolve_target(request.base.model, request.base.step)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = request.suite or "suite"
    if target.run_dir is not None:
        return target.run_dir / "eval" / f"{name}-{request.base.prompt}-step{target.step:08d}-{stamp}"
    return Path("runs") / "eval" / f"{name}-{request.base.prompt}-{target.label}-{stamp}"


def prepare_suite(request: SuiteRequest, *, force: bool = False) -> tuple[Path, list[Path], list[str]]:
    """Prepare one evaluation directory per benchmark under the suite's directory."""
    names = chosen_benchmarks(request)
    out = suite_dir(request)
    directories, notes = [], []
    unknown = [name for name in request.data if name not in names]
    if unknown:
        raise EvalDataError(f"data given for {', '.join(unknown)}, which this suite run does not evaluate")
    for name in names:
        data = request.data.get(name) or data_in_directory(name, request.data_dir) or data_in_directory(
            name, default_data_dir())
        sub = replace(request.base, benchmark=name, data=data, out_dir=str(out / name), mlflow=False)
        directory, sub_notes = runner.prepare(sub, force=force)
        directories.append(directory)
        notes.extend(f"{name}: {note}" for note in sub_notes)
    atomic_write_json(out / "suite.json", {"suite": request.suite, "benchmarks": names, "model": request.base.model})
    return out, directories, notes


def generate_suite(directories: Sequence[Path], *, on_start: Callable[[str, int], None] | None = None,
                   on_progress: Callable[[int], None] | None = None) -> None:
    """Answer every benchmark with one model load (skipping benchmarks already answered)."""
    todo = [d for d in directories if not (d / runner.RESPONSES_FILE).exists()]
    if not todo:
        return
    first = runner.read_plan(todo[0])
    config = first.run_config
    if first.load_from and first.load_from != config.model.name_or_path:
        config = config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": first.load_from})})
    longest = max(runner.read_plan(d).max_new_tokens for d in todo)
    backend, tokenizer = runner.load_backend(config, first.backend, todo[0].parent / "vllm", longest)
    try:
        for directory in todo:
            plan = runner.read_plan(directory)
            runner.generate(directory, backend=backend, tokenizer=tokenizer, on_progress=on_progress,
                            on_loaded=(lambda n, name=plan.benchmark: on_start(name, n)) if on_start else None)
    finally:
        if hasattr(backend, "close"):
            backend.close()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def build_table(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-benchmark rows and the paper's three averages (None where no benchmark of that kind ran)."""
    rows = []
    for summary in summaries:
        benchmark = BENCHMARKS[summary["benchmark"]]
        base = summary.get("base_accuracy")
        passk = summary.get("pass_at_k")
        rows.append(TableRow(
            benchmark.name, benchmark.family, int(summary["problems"]), 100 * float(summary["accuracy"]),
            100 * float(base) if base is not None and benchmark.name in ("humaneval-plus", "mbpp-plus") else None,
            {k: 100 * v for k, v in passk.items()} if passk else None,
        ))
    code = _mean([r.score for r in rows if r.family == "code"])
    math_avg = _mean([r.score for r in rows if r.family == "math"])
    total = _mean([v for v in (code, math_avg) if v is not None])
    return {
        "rows": [r.__dict__ for r in rows], "code_avg": code, "math_avg": math_avg, "total": total,
        "code_benchmarks": sum(r.family == "code" for r in rows), "math_benchmarks": sum(r.family == "math" for r in rows),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table_markdown(table: dict[str, Any], title: str) -> str:
    """The table in the paper's layout: one column per benchmark, then the three averages."""
    rows = table["rows"]
    headers = [TABLE_LABELS.get(r["benchmark"], r["benchmark"]) for r in rows] + ["Code Avg", "Math Avg", "Total"]
    scores = [_cell(r["score"]) + (f" ({_cell(r['base'])})" if r["base"] is not None else "") for r in rows]
    values = scores + [_cell(table["code_avg"]), _cell(table["math_avg"]), _cell(table["total"])]
    counts = ", ".join(f"{r['benchmark']} {r['problems']}" for r in rows)
    lines = [f"### {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), "| " + " | ".join(values) + " |",
             "", f"pass@1 in %; HumanEval+ and MBPP+ on base+plus tests, base-only in parentheses. Problems: {counts}."]
    if table["code_benchmarks"] not in (0, 3) or table["math_benchmarks"] not in (0, 6):
        lines.append(f"Averages over the {table['code_benchmarks']} code and {table['math_benchmarks']} math benchmarks "
                     "that ran (the paper's are over 3 and 6).")
    return "\n".join(lines) + "\n"


def write_suite_outputs(out: Path, directories: Sequence[Path], table: dict[str, Any], title: str) -> None:
    atomic_write_json(out / TABLE_JSON, table)
    atomic_write_text(out / TABLE_MD, table_markdown(table, title))
    rows = [row for directory in directories for row in read_results(directory / RESULTS_FILE)]
    write_parquet_atomic(results_table(rows) if rows else pa.table({}), out / RESULTS_FILE)


def suite_metrics(table: dict[str, Any]) -> dict[str, float]:
    metrics = {f"eval/{SUITE_KEY}/{name}": float(table[name]) for name in ("code_avg", "math_avg", "total")
               if table[name] is not None}
    for row in table["rows"]:
        key = BENCHMARKS[row["benchmark"]].key
        metrics[f"eval/{key}/pass_at_1"] = row["score"]
        if row["base"] is not None:
            metrics[f"eval/{key}/base_pass_at_1"] = row["base"]
    return metrics


def log_suite(out: Path, directories: Sequence[Path], table: dict[str, Any], tracking_uri: str | None) -> tuple[str, str, str | None]:
    """The suite's MLflow run and a child run per benchmark; (run id, tracking uri, parent)."""
    from azr.eval.targets import RunInfo
    from azr.eval.mlflow_run import (
        TrackingTarget, log_evaluation, nested_tracking, sqlite_artifact_location, standalone_tracking,
    )

    plan = runner.read_plan(directories[0])
    target = nested_tracking(RunInfo(**plan.run_info)) if plan.run_info is not None else standalone_tracking(tracking_uri, out)
    params = {"suite": ",".join(runner.read_plan(d).benchmark for d in directories), "model": plan.model,
              "resolved_model": plan.resolved_model, "limit": plan.limit or "all", "prompt": plan.prompt,
              "decoding": runner.decoding_label(plan), "samples": plan.samples, "backend": plan.backend,
              "checkpoint_step": plan.step if plan.step is not None else "none"}
    tags = {"azr.suite": SUITE_KEY, "azr.model": plan.model}
    run_id = log_evaluation(target, run_name=f"eval-{SUITE_KEY}-{plan.label}", params=params, metrics=suite_metrics(table),
                            tags=tags, artifacts=[out / TABLE_MD, out / TABLE_JSON, out / RESULTS_FILE], step=plan.step or 0)
    child = TrackingTarget(target.tracking_uri, target.experiment, run_id, sqlite_artifact_location(target.tracking_uri))
    for directory in directories:
        sub = runner.read_plan(directory)
        summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
        log_evaluation(child, run_name=f"eval-{sub.key}-{sub.label}", params={"benchmark": sub.benchmark,
                       "data": sub.data or "default", "problems": sub.problems, "max_new_tokens": sub.max_new_tokens},
                       metrics=summary["metrics"], tags={"azr.benchmark": sub.benchmark},
                       artifacts=[directory / RESULTS_FILE, directory / "summary.json"], step=sub.step or 0)
    atomic_write_json(out / runner.MLFLOW_FILE, {"run_id": run_id, "tracking_uri": target.tracking_uri,
                                                 "parent_run_id": target.parent_run_id})
    return run_id, target.tracking_uri, target.parent_run_id
