"""Prefect flow: evaluate a model, a checkpoint or a training run's newest checkpoint on one
benchmark. The same stages as `azr eval run` (azr/eval/runner.py), one task each:

    prepare -> generate -> score -> log

Tasks pass the output directory (a path), never models or problem lists; each stage reads and
writes files there and is skipped when its file exists, so a retried or resumed flow run does not
redo finished work.

Event trigger. The training flow emits `azr.checkpoint.completed` when a checkpoint is complete,
with resource id `azr.run.<run name>` and payload {"run_dir", "step"}, and, for each benchmark
in the run's `eval.on_checkpoint`, `azr.checkpoint.evaluate` whose payload also carries that
benchmark and the run's eval settings (data, limit, prompt, max_new_tokens). The azr-eval
deployment in prefect.yaml reacts to the latter, so only runs that say what to evaluate start
evaluations:

    triggers:
      - type: event
        enabled: true
        match:
          prefect.resource.id: "azr.run.*"
        expect:
          - azr.checkpoint.evaluate
        parameters:
          benchmark: "{{ event.payload.benchmark }}"
          model: "{{ event.payload.run_dir }}"
          step: "{{ event.payload.step }}"
          data: "{{ event.payload.data }}"
          limit: "{{ event.payload.limit }}"

`benchmark: paper` (a suite name) runs the paper's table instead (azr/eval/suite.py): every
benchmark of the suite (or the part named in `benchmarks`), one model load, the table as a
Prefect artifact and an MLflow run with a child run per benchmark.

Given a run directory, the flow evaluates that checkpoint (or the newest one, with a warning, if
training has already pruned it), asks the model the way the run trained it (the run's
config.yaml; `preset` applies only to models that are not run directories), and logs a child
MLflow run nested under the training run, with metrics at the checkpoint's step.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from azr.eval import runner
from azr.eval import suite as suite_module
from azr.eval.benchmarks.registry import SUITES
from azr.eval.benchmarks.problems import EvalDataError


# The command line's option names, as this flow's parameters are called.
_PARAMETER_WORDS = {"--data": "the `data` parameter", "--limit": "the `limit` parameter", "--out": "the `out_dir` parameter",
                    "--force": "a new `out_dir`", "--preset": "the `preset` parameter"}


def in_parameter_words(message: str) -> str:
    """An error message of `azr eval` phrased for this flow's parameters."""
    for option, words in _PARAMETER_WORDS.items():
        message = re.sub(rf"{option}\b", words, message)
    return message


@task(name="eval-prepare")
def prepare_task(request: runner.EvalRequest) -> str:
    """Resolve benchmark, model and config; freeze the problems into the output directory.

    A benchmark that cannot be read (e.g. the hub is unreachable and `data` is not set) fails the
    task at once, with no retry, in the flow's words."""
    try:
        out_dir, notes = runner.prepare(request)
    except EvalDataError as exc:
        raise EvalDataError(in_parameter_words(str(exc))) from None
    logger = get_run_logger()
    for note in notes:
        logger.warning(note)
    plan = runner.read_plan(out_dir)
    logger.info(
        "%s: %d problems, model %s, prompt %s -> %s", plan.benchmark, plan.problems, plan.resolved_model, plan.prompt, out_dir
    )
    return str(out_dir)


@task(name="eval-generate")
def generate_task(out_dir: str) -> str:
    """Greedy answers from the model (loaded in this task's process)."""
    return str(runner.generate(out_dir))


@task(name="eval-score")
def score_task(out_dir: str) -> dict[str, Any]:
    """Predictions checked in the sandbox; the summary with its metrics."""
    return runner.score(out_dir)


@task(name="eval-log")
def log_task(out_dir: str, summary: dict[str, Any]) -> str | None:
    """The MLflow run, and a Prefect artifact with the result."""
    run_id = runner.log(out_dir)
    statuses = ", ".join(f"{name} {count}" for name, count in summary["statuses"].items())
    create_markdown_artifact(
        key="azr-evaluation",
        description=f"{summary['benchmark']} on {summary['model']}",
        markdown=(
            f"## {summary['benchmark']} · {summary['model']}"
            + (f" (step {summary['step']})" if summary.get("step") is not None else "")
            + f"\n\n| accuracy | 95% CI | problems | statuses | MLflow run |\n|---|---|---|---|---|\n"
            f"| {100 * summary['accuracy']:.1f}% | {100 * summary['ci95_low']:.1f}-{100 * summary['ci95_high']:.1f}% "
            f"| {summary['problems']} | {statuses} | {run_id or 'not logged'} |\n\nFiles: `{out_dir}`\n"
        ),
    )
    return run_id


@task(name="eval-suite-prepare")
def prepare_suite_task(request: suite_module.SuiteRequest) -> list[str]:
    out, directories, notes = suite_module.prepare_suite(request)
    logger = get_run_logger()
    for note in notes:
        logger.warning(note)
    logger.info("suite: %d benchmarks -> %s", len(directories), out)
    return [str(d) for d in directories]


@task(name="eval-suite-generate")
def generate_suite_task(directories: list[str]) -> None:
    """Every benchmark answered with one model load."""
    suite_module.generate_suite([Path(d) for d in directories])


@task(name="eval-suite-table")
def table_task(directories: list[str], summaries: list[dict[str, Any]], tracking_uri: str | None, mlflow: bool) -> dict[str, Any]:
    """The paper's table: files, a Prefect artifact, the MLflow run with a child per benchmark."""
    paths = [Path(d) for d in directories]
    out = paths[0].parent
    plan = runner.read_plan(paths[0])
    table = suite_module.build_table(summaries)
    title = f"paper · {plan.label}"
    suite_module.write_suite_outputs(out, paths, table, title)
    run_id = suite_module.log_suite(out, paths, table, tracking_uri)[0] if mlflow else None
    create_markdown_artifact(key="azr-paper-table", description=f"the paper's table for {plan.model}",
                             markdown=suite_module.table_markdown(table, title) + f"\nMLflow run: {run_id or 'not logged'}; files: `{out}`\n")
    return table


@flow(name="azr-evaluate")
def evaluate_flow(
    benchmark: str,
    model: str,
    data: str | None = None,
    limit: int | None = None,
    preset: str = "cpu",
    overrides: list[str] = [],  # noqa: B006 - shown as the default in the Prefect UI; never mutated
    prompt: str = "azr",
    max_new_tokens: int | None = None,
    step: int | None = None,
    out_dir: str | None = None,
    tracking_uri: str | None = None,
    benchmarks: list[str] = [],  # noqa: B006 - as above
    data_dir: str | None = None,
    samples: int = 1,
    backend: str = "auto",
) -> dict[str, float]:
    """Evaluate `model` (hub id, model or checkpoint directory, or training run directory) on
    `benchmark` (e.g. humaneval-plus, aime24, cruxeval-o; or `paper` for the paper's table, with
    `benchmarks` a part of it); returns the `eval/<key>/...` metrics."""
    request = runner.EvalRequest(
        benchmark=benchmark, model=model, data=data, limit=limit, prompt=prompt,  # type: ignore[arg-type]
        max_new_tokens=max_new_tokens, step=step, out_dir=out_dir, tracking_uri=tracking_uri,
        preset=preset, overrides=tuple(overrides), samples=samples, backend=backend,
    )
    if benchmark.strip().lower() in SUITES:
        suite_request = suite_module.SuiteRequest(benchmark.strip().lower(), tuple(benchmarks), request, {}, data_dir)
        directories = prepare_suite_task(suite_request)
        generate_suite_task(directories)
        summaries = [score_task(d) for d in directories]
        table = table_task(directories, summaries, tracking_uri, True)
        return suite_module.suite_metrics(table)
    directory = prepare_task(request)
    generate_task(directory)
    summary = score_task(directory)
    log_task(directory, summary)
    return summary["metrics"]
