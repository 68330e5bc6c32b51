"""`azr runs`: see what training runs did, from their files alone (no engine, no Prefect)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from azr.cli.output import console, err_console
from azr.cli.output import fail as _fail
from azr.cli.output import print_table
from azr.cli.output import rows_table as _table

runs_app = typer.Typer(help="See what training runs did, from their files.", no_args_is_help=True)


def _run_dirs(root: Path) -> list[Path]:
    if (root / "config.yaml").is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "config.yaml").is_file())


@runs_app.command("list")
def runs_list(root: Annotated[Path, typer.Argument(help="A run directory, or a folder of them.")] = Path("runs")) -> None:
    """One line per run: iterations done, last reward and validity, where it is tracked."""
    from azr.pipeline.run_dir import RunDir, RunDirError

    dirs = _run_dirs(root)
    if not dirs:
        _fail(f"no training runs under {root} (a run directory holds a config.yaml)")
    rows = []
    for path in dirs:
        run = RunDir(path)
        try:
            config = run.read_config()
        except RunDirError as exc:
            rows.append({"run": str(path), "preset": "?", "iterations": "?", "reward": "", "valid": "", "note": str(exc)[:60]})
            continue
        done = run.completed_steps()
        last, problem = _iteration_metrics(run, done[-1]) if done else ({}, None)
        rows.append({
            "run": str(path), "preset": config.name, "iterations": f"{len(done)}/{config.trainer.iterations}",
            "reward": f"{last['overall/reward_mean']:+.3f}" if "overall/reward_mean" in last else "",
            "valid": f"{last['overall/valid_rate']:.0%}" if "overall/valid_rate" in last else "",
            "note": (f"damaged metrics.json (iteration {done[-1]}): azr runs show {path}" if problem else
                     "complete" if len(done) >= config.trainer.iterations else "can be resumed"),
        })
    print_table(_table(rows, f"runs under {root}"))


def _iteration_metrics(run: Any, step: int) -> tuple[dict[str, float], str | None]:
    """An iteration's metrics, and what is wrong with its metrics.json when it cannot be read
    (one damaged file must not hide the other runs or iterations)."""
    from azr.pipeline.atomic_io import json_problem

    path = run.stage_path(step, "metrics.json")
    if not path.exists():
        return {}, None
    problem = json_problem(path)
    metrics = {} if problem else run.read_json(step, "metrics.json").get("metrics", {})
    if not problem and not isinstance(metrics, dict):
        metrics, problem = {}, "without a metrics table"
    return metrics, problem


@runs_app.command("show")
def runs_show(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.")],
    iteration: Annotated[Optional[int], typer.Option(help="Details of one iteration.", min=1)] = None,
) -> None:
    """What happened in a run (per iteration), or in one iteration (per group, with examples)."""
    import pandas as pd

    from azr.pipeline.metrics import summary_rows
    from azr.pipeline.run_dir import RunDir, RunDirError

    run = RunDir(run_dir)
    try:
        config = run.read_config()
    except RunDirError as exc:
        _fail(str(exc))
    try:
        info = run.read_info()
    except RunDirError as exc:  # the run's files can still be shown; only its MLflow link is lost
        err_console.print(f"[yellow]warning:[/] {escape(str(exc))}; the MLflow run it names cannot be shown "
                          "(the stage files and checkpoints are read without it)", highlight=False, soft_wrap=True)
        info = {}
    console.print(f"[bold]{escape(str(run_dir))}[/]: preset {escape(config.name)}, model {escape(config.model.name_or_path)}, "
                  f"{len(run.completed_steps())}/{config.trainer.iterations} iterations; MLflow run {info.get('mlflow_run_id', '-')}")
    if iteration is None:
        rows = []
        damaged = []
        for step in run.steps():
            metrics, problem = _iteration_metrics(run, step)
            if problem:
                damaged.append(f"{run.stage_path(step, 'metrics.json')} is {problem}")
            rows.append({
                "iteration": step,
                "complete": ("yes" if run.iteration_done(step) else "no") + (" (metrics.json damaged)" if problem else ""),
                "reward": f"{metrics.get('overall/reward_mean', float('nan')):+.3f}",
                "valid": f"{metrics.get('overall/valid_rate', float('nan')):.0%}",
                "solve acc": f"{metrics.get('overall/solve_accuracy', float('nan')):.0%}",
                "loss": f"{metrics.get('update/loss', float('nan')):.4f}",
                "seconds": f"{metrics.get('time/iteration_s', float('nan')):.0f}",
            })
        if rows:
            print_table(_table(rows, "iterations"))
        for line in damaged:
            err_console.print(f"[yellow]warning:[/] {escape(line)}; `azr train --resume {escape(str(run_dir))}` sets it "
                              "aside and computes it again", highlight=False, soft_wrap=True)
        return
    if iteration not in run.steps():
        _fail(f"iteration {iteration} has no files in {run_dir}; iterations there: {run.steps() or 'none'}")
    metrics, problem = _iteration_metrics(run, iteration)
    if problem:
        err_console.print(f"[yellow]warning:[/] {escape(str(run.stage_path(iteration, 'metrics.json')))} is "
                          f"{escape(problem)}: no metrics to show", highlight=False, soft_wrap=True)
    if metrics:
        print_table(_table(summary_rows(metrics), f"iteration {iteration}"))
    from azr.pipeline.registry import StageFile
    from azr.pipeline.stage_files import stage_file_problem

    validated_path = run.stage_path(iteration, StageFile.VALIDATED)
    validated_problem = stage_file_problem(validated_path) if validated_path.exists() else None
    if validated_problem:
        err_console.print(f"[yellow]warning:[/] {escape(str(validated_path))} is {escape(validated_problem)}: "
                          "no proposals to show", highlight=False, soft_wrap=True)
    elif validated_path.exists():
        validated = pd.read_parquet(validated_path)
        reasons = validated.loc[validated["reason"] != "", "reason"].value_counts()
        if len(reasons):
            print_table(_table([{"reason": r, "proposals": int(n)} for r, n in reasons.items()], "why proposals failed"))
        valid = validated[validated["valid"]]
        if len(valid):
            example = valid.iloc[0]
            console.print(f"[bold]a valid {escape(str(example['group']))} proposal[/]:")
            console.print(example["program"], markup=False, highlight=False)
    console.print(f"files: {run.iteration_dir(iteration)}", markup=False)


@runs_app.command("verify")
def runs_verify(run_dir: Annotated[Path, typer.Argument(help="The run directory.")]) -> None:
    """Check every file of a run against its checksums and structure: what is intact, what
    `azr train --resume` repairs, and what it cannot (exit 0 only when everything is intact).

    Reads every stage file (Parquet page checksums), the buffer log, and every checkpoint
    (the sha256 of each file, written in its completion marker); changes nothing.
    """
    from azr.pipeline.resume import RunStateError, plan_resume
    from azr.pipeline.run_dir import RunDir, RunDirError

    run = RunDir(run_dir)
    if not (Path(run_dir) / "config.yaml").is_file():
        _fail(f"{run_dir} is not a run directory (no config.yaml there)")
    try:
        config = run.read_config()
    except RunDirError as exc:
        _fail(f"{exc}; nothing else can be checked without the run's settings", 1)
    counts = _verified_counts(run)
    try:
        plan = plan_resume(run, config)
    except RunStateError as exc:
        err_console.print(f"[bold red]cannot be repaired[/] (`azr train --resume` refuses until this is fixed):\n"
                          f"{escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if plan.warnings or plan.repairs:
        console.print(f"[bold yellow]can be repaired[/]: `azr train --resume {escape(str(run_dir))}` does it first:",
                      highlight=False, soft_wrap=True)
        for line in plan.warnings:
            console.print(f"  - {line}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"the rest is intact: {counts}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[bold green]intact[/]: {escape(counts)}", highlight=False, soft_wrap=True)


def _verified_counts(run: Any) -> str:
    """What the check read, in a line: iterations, stage files, buffer steps, checkpoints."""
    from azr.engine.training.checkpoints import marker_checksums
    from azr.pipeline.buffer_log import committed_steps

    files = sum(1 for step in run.steps() for path in run.iteration_dir(step).iterdir() if path.is_file())
    checkpoints = sorted(run.checkpoint_dir.glob("step-*")) if run.checkpoint_dir.is_dir() else []
    summed = sum(1 for path in checkpoints if marker_checksums(path))
    return (f"{len(run.steps())} iterations ({files} files), buffer log steps {len(committed_steps(run.buffer_dir))}, "
            f"{len(checkpoints)} checkpoints ({summed} with sha256 checksums, verified)")
