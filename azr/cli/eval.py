"""`azr eval ...`: evaluate a model, a checkpoint or a training run on a benchmark, or score
predictions made by any system. Mounted by azr/cli/main.py. Errors the user can fix are one paragraph
with a non-zero exit code (2: bad input, 1: something failed while running)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table
from azr.cli.output import console, err_console, fail

eval_app = typer.Typer(
    help="Evaluate models and checkpoints on benchmarks (the paper's table, CRUXEval, HumanEval, your own sets).",
    no_args_is_help=True
)


BenchmarkOption = Annotated[
    str, typer.Option("--benchmark", "-b", help="A benchmark name, e.g. humaneval-plus, aime24, cruxeval-o; see `azr eval benchmarks`.")
]
DataOption = Annotated[
    Optional[str],
    typer.Option("--data", "-d", help="Benchmark file (JSONL, JSONL.gz or Parquet) or hub dataset id; "
                 "default: the benchmark's own source."),
]
TimeoutOption = Annotated[
    Optional[float], typer.Option("--timeout", help="Sandbox wall-clock limit per problem, seconds.", min=0.1)
]
PresetOption = Annotated[
    Optional[str],
    typer.Option("--preset", "-p", help="Preset for model/sandbox settings (default cpu; a run directory uses its own config)."),
]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with settings, applied over the preset.")]
SetOption = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Override one setting: section.key=value (repeatable).")
]
ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="Hub id, model directory, checkpoint directory, training run directory, "
                 "bundled:smollm2-135m-instruct or tiny-random."),
]
LimitOption = Annotated[Optional[int], typer.Option("--limit", "-n", help="Evaluate the first N problems only.", min=1)]
RunOutOption = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Output directory (default RUN_DIR/eval/... or runs/eval/...).")
]
PromptOption = Annotated[
    str,
    typer.Option("--prompt", help="azr: the training solve prompts in the model's wrapper; "
                 "plain: a benchmark prompt for base models."),
]
MaxTokensOption = Annotated[
    Optional[int], typer.Option("--max-new-tokens", help="Default: the config's rollout.max_new_tokens.", min=1)
]
StepOption = Annotated[
    Optional[int], typer.Option("--step", help="Checkpoint step of a run directory (default: the newest).", min=0)
]
TrackingOption = Annotated[
    Optional[str], typer.Option("--tracking-uri", help="MLflow store for a standalone evaluation (default: OUT/mlflow.db).")
]
PredictionsOption = Annotated[
    Path,
    typer.Option("--predictions", "-P", help='JSONL lines {"id", "prediction"} (also {"task_id", "completion"} or '
                 '"solution", or a whole "response"); ids as the benchmark file gives them.'),
]
ScoreOutOption = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Directory for the verdicts (default: <predictions>-scored/).")
]




def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


@contextmanager
def _user_errors(code: int = 2) -> Iterator[None]:
    """Turn the errors a user can fix into one paragraph and an exit code."""
    from azr.config.loading import ConfigError
    from azr.eval.benchmarks.problems import EvalDataError

    try:
        yield
    except (EvalDataError, ConfigError) as exc:
        fail(str(exc), code)


def _open_executor(sandbox: Any, problems: Any = None) -> Any:
    """The sandbox for scoring; a no-op context when the problems need none (math only)."""
    from contextlib import nullcontext

    from azr.eval.scoring.code_benchmarks import needs_sandbox
    from azr.sandbox import IsolationUnavailable, SandboxError, SandboxExecutor

    if problems is not None and not needs_sandbox(problems):
        return nullcontext(None)
    try:
        return SandboxExecutor(sandbox)
    except (IsolationUnavailable, SandboxError) as exc:
        fail(f"the sandbox cannot start: {exc}", 1)


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    from azr.eval.scoring.stats import Accuracy

    accuracy = Accuracy(summary["correct"], summary["problems"], summary["ci95_low"], summary["ci95_high"])
    table = Table(title=title, show_header=False)
    table.add_row("accuracy", accuracy.describe())
    table.add_row("statuses", ", ".join(f"{name} {count}" for name, count in summary["statuses"].items()))
    if summary.get("format_rate") is not None:
        table.add_row("think/answer format", f"{100 * summary['format_rate']:.1f}%")
    if summary.get("response_tokens_mean") is not None:
        table.add_row("response tokens (mean)", f"{summary['response_tokens_mean']:.0f}")
    if summary.get("clip_ratio") is not None:
        table.add_row("cut at max_new_tokens", f"{100 * summary['clip_ratio']:.1f}%")
    console.print(table)


@eval_app.command("benchmarks")
def eval_benchmarks() -> None:
    """List the benchmarks and where their data comes from by default."""
    from azr.eval.benchmarks.registry import BENCHMARKS

    table = Table("benchmark", "metric key", "default data", "what")
    for benchmark in BENCHMARKS.values():
        table.add_row(benchmark.name, benchmark.key, benchmark.default_data or "--data required", benchmark.description)
    console.print(table)
    from azr.eval.benchmarks.registry import SUITES

    for name, members in SUITES.items():
        console.print(f"suite {name} (--suite {name}): {', '.join(members)}", highlight=False, markup=False)


@eval_app.command("run")
def eval_run(
    model: ModelOption,
    benchmark: Annotated[
        Optional[str], typer.Option("--benchmark", "-b", help="One benchmark; see `azr eval benchmarks`.")
    ] = None,
    suite: Annotated[
        Optional[str], typer.Option("--suite", help="paper: the paper's table (3 code and 6 math benchmarks).")
    ] = None,
    benchmarks: Annotated[
        Optional[str], typer.Option("--benchmarks", help="Comma-separated part of the suite, e.g. humaneval-plus,aime24.")
    ] = None,
    data: Annotated[
        Optional[list[str]],
        typer.Option("--data", "-d", help="Benchmark file (JSONL, JSONL.gz, Parquet; a folder for livecodebench) or hub "
                     "id; with --suite, NAME=PATH (repeatable). Default: the benchmark's own source."),
    ] = None,
    data_dir: Annotated[
        Optional[Path], typer.Option("--data-dir", help="A folder holding the suite's files under their public names "
                                     "(see azr/eval/README.md); default $AZR_DATA_DIR or ~/.cache/azr/data.")
    ] = None,
    limit: LimitOption = None,
    out: RunOutOption = None,
    prompt: PromptOption = "azr",
    max_new_tokens: Annotated[
        Optional[int], typer.Option("--max-new-tokens", help="Default: the paper's (8096 code, 16000 math), else the "
                                    "config's rollout.max_new_tokens.", min=1)
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Answers per problem; above 1 reports pass@k (k up to n).", min=1)] = 1,
    temperature: Annotated[
        Optional[float], typer.Option("--temperature", help="Sampling temperature (default: greedy for 1 sample, 1.0 for more).", min=0.0)
    ] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="LiveCodeBench: contests on or after YYYY-MM-DD.")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="LiveCodeBench: contests on or before YYYY-MM-DD.")] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto (vLLM with a GPU and vLLM installed, else transformers), transformers or vllm.")
    ] = "auto",
    step: StepOption = None,
    tracking_uri: TrackingOption = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")] = False,
    timeout: TimeoutOption = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in an --out that holds another evaluation.")] = False,
    preset: PresetOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Evaluate a model, checkpoint or training run on a benchmark, or on the paper's suite.

    Answers are scored in the sandbox: pass@1 / accuracy with a 95% interval, per-problem results
    as Parquet, and an MLflow run (nested under the training run when --model is a run directory).
    `--suite paper` prints the paper's table (per benchmark, code avg, math avg, total).
    """
    from azr.engine.training.checkpoints import CheckpointError
    from azr.ops.failure_advice import model_load_error_types, own_reason
    from azr.eval import runner

    chosen = [name for name, value in (("--benchmark", benchmark), ("--suite", suite or benchmarks)) if value]
    if len(chosen) != 1:
        fail("give either --benchmark NAME, or --suite paper (optionally with --benchmarks a,b), or --benchmarks a,b")
    request = runner.EvalRequest(
        benchmark=benchmark or "", model=model, data=None, limit=limit, prompt=prompt,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens, step=step, out_dir=str(out) if out else None, tracking_uri=tracking_uri,
        mlflow=not no_mlflow, timeout_s=timeout, preset=preset, config_file=str(config) if config else None,
        overrides=tuple(set_ or ()), samples=samples, temperature=temperature, since=since, until=until, backend=backend,
    )
    if benchmark is None:
        _run_suite(request, suite, benchmarks, data or [], data_dir, force)
        return
    if data is not None and len(data) > 1:
        fail("--data takes one file for a single benchmark (NAME=PATH pairs are for --suite)")
    request = runner.EvalRequest(**{**request.__dict__, "data": data[0] if data else None})
    with _user_errors():
        try:
            out_dir, notes = runner.prepare(request, force=force)
        except CheckpointError as exc:
            fail(str(exc))
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    plan = runner.read_plan(out_dir)
    console.print(f"{plan.benchmark}: {plan.problems} problems, model {plan.resolved_model}, prompt {plan.prompt}, "
                  f"{runner.decoding_label(plan)}, max {plan.max_new_tokens} new tokens -> {out_dir}", highlight=False, markup=False)
    with _progress() as progress:
        loading = progress.add_task("loading the model", total=None)
        state: dict[str, int] = {}

        def loaded(total: int) -> None:
            progress.update(loading, total=1, completed=1, description="model loaded")
            state["generate"] = progress.add_task("generating", total=total)

        try:
            runner.generate(out_dir, on_loaded=loaded, on_progress=lambda n: progress.advance(state["generate"], n))
        except (ValueError, *model_load_error_types()) as exc:
            fail(f"cannot generate with {plan.resolved_model}: {own_reason(exc)}", 1)
        progress.update(loading, total=1, completed=1)
        scoring = progress.add_task("scoring in the sandbox", total=plan.problems * plan.samples)
        with _open_executor(_sandbox_for(out_dir, plan), runner.read_problems(out_dir)) as executor:
            summary = runner.score(out_dir, executor=executor, on_progress=lambda n: progress.advance(scoring, n))
        progress.update(scoring, completed=plan.problems * plan.samples)
    _print_summary(f"{plan.benchmark} · {plan.label}", summary)
    console.print(f"per-problem results: {out_dir / 'results.parquet'}", highlight=False, markup=False)
    _log_to_mlflow(runner, out_dir)


def _sandbox_for(out_dir: Path, plan: Any) -> Any:
    from azr.eval.scoring.code_benchmarks import sandbox_for
    from azr.eval.runner import read_problems

    return sandbox_for(read_problems(out_dir), plan.run_config.sandbox)


def _suite_data(items: list[str]) -> dict[str, str]:
    from azr.eval.benchmarks.registry import get_benchmark

    mapping = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            fail(f"--data {item!r}: with --suite, give NAME=PATH (e.g. aime24=data/aime24/test.jsonl)")
        with _user_errors():
            mapping[get_benchmark(name).name] = path.strip()
    return mapping


def print_table(table: dict[str, Any], title: str) -> None:
    """The paper's layout: a column per benchmark, then code avg, math avg and total; base-only
    figures (HumanEval+, MBPP+) in a second row."""
    from azr.eval.suite import TABLE_LABELS, _cell

    rows = table["rows"]
    view = Table(title=title)
    view.add_column("")
    for row in rows:
        view.add_column(TABLE_LABELS.get(row["benchmark"], row["benchmark"]), justify="right")
    for name in ("Code Avg", "Math Avg", "Total"):
        view.add_column(name, justify="right", style="bold")
    view.add_row("pass@1", *[_cell(r["score"]) for r in rows], _cell(table["code_avg"]), _cell(table["math_avg"]),
                 _cell(table["total"]))
    if any(r["base"] is not None for r in rows):
        view.add_row("base tests", *[_cell(r["base"]) if r["base"] is not None else "" for r in rows], "", "", "")
    console.print(view)
    console.print("pass@1 in %; HumanEval+/MBPP+ on base+plus tests; problems: "
                  + ", ".join(f"{r['benchmark']} {r['problems']}" for r in rows), highlight=False, markup=False)
    for row in rows:
        if row.get("pass_at_k"):
            console.print(f"{row['benchmark']}: " + ", ".join(f"pass@{k} {v:.1f}" for k, v in row["pass_at_k"].items()),
                          highlight=False, markup=False)


def _run_suite(request: Any, suite: str | None, benchmarks: str | None, data: list[str], data_dir: Path | None,
               force: bool) -> None:
    from azr.engine.training.checkpoints import CheckpointError
    from azr.ops.failure_advice import model_load_error_types, own_reason
    from azr.eval import runner
    from azr.eval import suite as suite_module

    parts = tuple(b.strip() for b in (benchmarks or "").split(",") if b.strip())
    suite_request = suite_module.SuiteRequest(suite, parts, request, _suite_data(data), str(data_dir) if data_dir else None)
    with _user_errors():
        try:
            out, directories, notes = suite_module.prepare_suite(suite_request, force=force)
        except CheckpointError as exc:
            fail(str(exc))
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    plans = [runner.read_plan(d) for d in directories]
    console.print(f"{len(plans)} benchmarks ({', '.join(f'{p.benchmark} {p.problems}' for p in plans)}), model "
                  f"{plans[0].resolved_model}, {runner.decoding_label(plans[0])} -> {out}", highlight=False, markup=False)
    started = __import__("time").monotonic()
    with _progress() as progress:
        state: dict[str, int] = {}

        def starting(name: str, total: int) -> None:
            state["task"] = progress.add_task(f"generating {name}", total=total)

        try:
            suite_module.generate_suite(directories, on_start=starting,
                                        on_progress=lambda n: progress.advance(state["task"], n))
        except (ValueError, *model_load_error_types()) as exc:
            fail(f"cannot generate with {plans[0].resolved_model}: {own_reason(exc)}", 1)
        summaries = []
        for directory, plan in zip(directories, plans):
            task = progress.add_task(f"scoring {plan.benchmark}", total=plan.problems * plan.samples)
            with _open_executor(_sandbox_for(directory, plan), runner.read_problems(directory)) as executor:
                summaries.append(runner.score(directory, executor=executor, on_progress=lambda n, t=task: progress.advance(t, n)))
    table = suite_module.build_table(summaries)
    title = f"{suite or 'suite'} · {plans[0].label}"
    suite_module.write_suite_outputs(out, directories, table, title)
    print_table(table, title)
    console.print(f"table: {out / suite_module.TABLE_MD}; per-problem results: {out / 'results.parquet'}; "
                  f"wall time {__import__('time').monotonic() - started:.0f} s", highlight=False, markup=False)
    if request.mlflow:
        from mlflow.exceptions import MlflowException

        try:
            run_id, uri, parent = suite_module.log_suite(out, directories, table, request.tracking_uri)
        except (MlflowException, OSError) as exc:
            fail(f"the results are in {out}, but logging them to MLflow failed: {exc}", 1)
        nested = f", nested under run {parent}" if parent else ""
        console.print(f"MLflow run {run_id} ({uri}{nested}), one child run per benchmark", highlight=False, markup=False)


def _log_to_mlflow(runner: Any, out_dir: Path) -> None:
    from mlflow.exceptions import MlflowException

    try:
        run_id = runner.log(out_dir)
    except (MlflowException, OSError) as exc:
        fail(f"the results are in {out_dir}, but logging them to MLflow failed: {exc}", 1)
    if run_id is not None:
        import json

        info = json.loads((out_dir / runner.MLFLOW_FILE).read_text(encoding="utf-8"))
        parent = f", nested under run {info['parent_run_id']}" if info.get("parent_run_id") else ""
        console.print(f"MLflow run {run_id} ({info['tracking_uri']}{parent})", highlight=False, markup=False)


def _print_report(report: Any, shown: int = 10) -> None:
    """Missing, extra, duplicate and malformed lines: counted, and the first few listed."""
    def listed(items: list[str]) -> str:
        more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
        return ", ".join(items[:shown]) + more

    findings = [
        ("missing", [repr(i) for i in report.missing], "benchmark problems without a prediction (scored as wrong)"),
        ("extra", [repr(i) for i in report.extra], "ids that are not in the benchmark (ignored)"),
        ("duplicate", [repr(i) for i in report.duplicates], "ids given again (the first line counts)"),
        ("malformed", [f"line {b.number}: {b.reason}" for b in report.malformed], "lines that could not be read (ignored)"),
    ]
    for name, items, meaning in findings:
        if items:
            err_console.print(f"[yellow]{name}: {len(items)}[/] {meaning}: {escape(listed(items))}", highlight=False, soft_wrap=True)


@eval_app.command("score")
def eval_score(
    benchmark: BenchmarkOption,
    predictions: PredictionsOption,
    data: DataOption = None,
    out: ScoreOutOption = None,
    timeout: TimeoutOption = None,
    preset: PresetOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Score predictions made by any system (no model needed).

    Prints the accuracy and writes per-problem verdicts (results.parquet, results.jsonl,
    summary.json); missing, extra and malformed lines are reported, not fatal.
    """
    import math

    from azr.config.loading import build_config, chosen_preset
    from dataclasses import asdict

    from azr.eval.benchmarks.problems import skipped_notes
    from azr.eval.benchmarks.registry import get_benchmark
    from azr.eval.evaluate import score_report
    from azr.eval.runner import skipped_rows
    from azr.eval.predictions import read_predictions
    from azr.eval.results import metrics_from_summary, summarise, write_results, write_summary

    with _user_errors():
        chosen = get_benchmark(benchmark)
        run_config = build_config(chosen_preset(preset, config), config, set_ or [])
        problems = chosen.load(data)
        report = read_predictions(predictions, [p.id for p in problems])
    out_dir = out or predictions.parent / f"{predictions.name.split('.')[0]}-scored"
    if out_dir.is_file():
        fail(f"--out {out_dir} is a file, not a directory")
    from azr.eval.scoring.code_benchmarks import sandbox_for

    sandbox = sandbox_for(problems, run_config.sandbox)
    if timeout is not None:
        sandbox = sandbox.model_copy(update={"timeout_s": timeout, "cpu_time_s": max(1, math.ceil(timeout))})
    _print_report(report)
    for note in skipped_notes(problems):
        err_console.print(f"[bold yellow]warning:[/] {escape(note)}", highlight=False, soft_wrap=True)
    with _progress() as progress, _open_executor(sandbox, problems) as executor:
        scoring = progress.add_task("scoring in the sandbox", total=len(problems))
        rows = score_report(chosen.name, problems, report, executor, on_progress=lambda n: progress.advance(scoring, n))
    skipped = [asdict(row) for row in getattr(problems, "skipped", ())]
    rows = [*rows, *skipped_rows(chosen.name, skipped, 1, rows)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(rows, out_dir)
    summary = {
        **summarise(rows), "benchmark": chosen.name, "data": data, "predictions": str(predictions),
        "missing": len(report.missing), "extra": len(report.extra), "duplicates": len(report.duplicates),
        "malformed": len(report.malformed),
    }
    summary["metrics"] = metrics_from_summary(chosen.metric_key(data), summary)
    write_summary(summary, out_dir)
    _print_summary(f"{chosen.name} · {predictions.name}", summary)
    console.print(f"verdicts: {out_dir / 'results.parquet'} and results.jsonl", highlight=False, markup=False)
