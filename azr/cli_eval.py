"""`azr eval ...`: evaluate a model, a checkpoint or a training run on a benchmark, or score
predictions made by any system. Mounted by azr/cli.py. Errors the user can fix are one paragraph
with a non-zero exit code (2: bad input, 1: something failed while running)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table

eval_app = typer.Typer(
    help="Evaluate models and checkpoints on benchmarks (CRUXEval, HumanEval, your own sets).", no_args_is_help=True
)

console = Console()
err_console = Console(stderr=True)

BenchmarkOption = Annotated[
    str, typer.Option("--benchmark", "-b", help="cruxeval-o, cruxeval-i, humaneval or custom; see `azr eval benchmarks`.")
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
    typer.Option("--predictions", "-P", help='JSONL lines {"id", "prediction"} (HumanEval\'s {"task_id", "completion"} too).'),
]
ScoreOutOption = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Directory for the verdicts (default: <predictions>-scored/).")
]


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


@contextmanager
def _user_errors(code: int = 2) -> Iterator[None]:
    """Turn the errors a user can fix into one paragraph and an exit code."""
    from azr.config_loader import ConfigError
    from azr.eval.problems import EvalDataError

    try:
        yield
    except (EvalDataError, ConfigError) as exc:
        fail(str(exc), code)


def _open_executor(sandbox: Any) -> Any:
    from azr.sandbox import IsolationUnavailable, SandboxError, SandboxExecutor

    try:
        return SandboxExecutor(sandbox)
    except (IsolationUnavailable, SandboxError) as exc:
        fail(f"the sandbox cannot start: {exc}", 1)


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    from azr.eval.stats import Accuracy

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
    from azr.eval.benchmarks import BENCHMARKS

    table = Table("benchmark", "metric key", "default data", "what")
    for benchmark in BENCHMARKS.values():
        table.add_row(benchmark.name, benchmark.key, benchmark.default_data or "--data required", benchmark.description)
    console.print(table)


@eval_app.command("run")
def eval_run(
    benchmark: BenchmarkOption,
    model: ModelOption,
    data: DataOption = None,
    limit: LimitOption = None,
    out: RunOutOption = None,
    prompt: PromptOption = "azr",
    max_new_tokens: MaxTokensOption = None,
    step: StepOption = None,
    tracking_uri: TrackingOption = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")] = False,
    timeout: TimeoutOption = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in an --out that holds another evaluation.")] = False,
    preset: PresetOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Evaluate a model, checkpoint or training run on a benchmark.

    Greedy answers are scored in the sandbox: accuracy with a 95% interval, per-problem results
    as Parquet, and an MLflow run (nested under the training run when --model is a run directory).
    """
    from azr.engine.checkpoints import CheckpointError
    from azr.engine.model_source import ModelSourceError
    from azr.eval import runner

    request = runner.EvalRequest(
        benchmark=benchmark, model=model, data=data, limit=limit, prompt=prompt,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens,
        step=step, out_dir=str(out) if out else None, tracking_uri=tracking_uri, mlflow=not no_mlflow,
        timeout_s=timeout, preset=preset, config_file=str(config) if config else None, overrides=tuple(set_ or ()),
    )
    with _user_errors():
        try:
            out_dir, notes = runner.prepare(request, force=force)
        except CheckpointError as exc:
            fail(str(exc))
    for note in notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    plan = runner.read_plan(out_dir)
    console.print(f"{plan.benchmark}: {plan.problems} problems, model {plan.resolved_model}, prompt {plan.prompt}, "
                  f"greedy, max {plan.max_new_tokens} new tokens -> {out_dir}", highlight=False)
    with _progress() as progress:
        loading = progress.add_task("loading the model", total=None)
        state: dict[str, int] = {}

        def loaded(total: int) -> None:
            progress.update(loading, total=1, completed=1, description="model loaded")
            state["generate"] = progress.add_task("generating", total=total)

        try:
            runner.generate(out_dir, on_loaded=loaded, on_progress=lambda n: progress.advance(state["generate"], n))
        except (ModelSourceError, OSError, ValueError) as exc:
            fail(f"cannot generate with {plan.resolved_model}: {exc}", 1)
        progress.update(loading, total=1, completed=1)
        scoring = progress.add_task("scoring in the sandbox", total=plan.problems)
        executor = _open_executor(plan.run_config.sandbox)
        with executor:
            summary = runner.score(out_dir, executor=executor, on_progress=lambda n: progress.advance(scoring, n))
        progress.update(scoring, completed=plan.problems)
    _print_summary(f"{plan.benchmark} · {plan.label}", summary)
    console.print(f"per-problem results: {out_dir / 'results.parquet'}", highlight=False)
    _log_to_mlflow(runner, out_dir)


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
        console.print(f"MLflow run {run_id} ({info['tracking_uri']}{parent})", highlight=False)


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
            err_console.print(f"[yellow]{name}: {len(items)}[/] {meaning}: {listed(items)}", highlight=False, soft_wrap=True)


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

    from azr.config_loader import DEFAULT_PRESET, build_config
    from azr.eval.benchmarks import get_benchmark
    from azr.eval.evaluate import score_report
    from azr.eval.predictions import read_predictions
    from azr.eval.results import metrics_from_summary, summarise, write_results, write_summary

    with _user_errors():
        chosen = get_benchmark(benchmark)
        run_config = build_config(preset or (None if config else DEFAULT_PRESET), config, set_ or [])
        problems = chosen.load(data)
        report = read_predictions(predictions, [p.id for p in problems])
    out_dir = out or predictions.parent / f"{predictions.name.split('.')[0]}-scored"
    if out_dir.is_file():
        fail(f"--out {out_dir} is a file, not a directory")
    sandbox = run_config.sandbox
    if timeout is not None:
        sandbox = sandbox.model_copy(update={"timeout_s": timeout, "cpu_time_s": max(1, math.ceil(timeout))})
    _print_report(report)
    with _progress() as progress, _open_executor(sandbox) as executor:
        scoring = progress.add_task("scoring in the sandbox", total=len(problems))
        rows = score_report(chosen.name, problems, report, executor, on_progress=lambda n: progress.advance(scoring, n))
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
    console.print(f"verdicts: {out_dir / 'results.parquet'} and results.jsonl", highlight=False)
