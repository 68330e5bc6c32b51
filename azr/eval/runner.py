"""An evaluation end to end, as four stages on the files of one output directory.

    prepare   resolve benchmark, model and config; freeze the problems    plan.json, problems.jsonl
    generate  the model answers every prompt greedily                     responses.parquet
    score     predictions extracted and checked in the sandbox            results.parquet/.jsonl, summary.json
    log       the MLflow run (nested under the training run if any)       mlflow.json

Each stage reads only the directory, so the Prefect flow can run them as separate tasks and a
killed evaluation continues where it stopped: a stage whose file exists is not redone. The
problems are frozen into the directory at `prepare`, so later stages never need the network.
Generation uses vLLM where it is available (`--backend auto`: a GPU and a vLLM to run), else
the transformers backend; decoding is greedy, or n seeded samples for pass@k (`--samples`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from azr.pipeline.atomic_io import atomic_write_json, atomic_write_text, write_parquet_atomic
from azr.config.schema import AZRConfig
from azr.config.loading import build_config, chosen_preset
from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.benchmarks.livecodebench import parse_date
from azr.eval.benchmarks.problems import (
    CodeProblem, EvalDataError, LiveCodeProblem, MathProblem, PlusProblem, Problem, ReasoningProblem, skipped_notes,
)
from azr.eval.prompting.azr_prompts import PROMPT_STYLES, PromptStyle
from azr.eval.results import (
    RESULTS_FILE, RESULTS_JSONL, SUMMARY_FILE, ResultRow, metrics_from_summary, summarise, write_results,
    write_summary,
)
from azr.eval.targets import ModelTarget, RunInfo, pin_export, resolve_target
from azr.pipeline.schemas import EVAL_RESPONSES_SCHEMA
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import RESPONSE_PREFIX

PLAN_FILE = "plan.json"
PROBLEMS_FILE = "problems.jsonl"
RESPONSES_FILE = "responses.parquet"
MLFLOW_FILE = "mlflow.json"
BACKENDS = ("auto", "transformers", "vllm")
STAGE_FILES = (PLAN_FILE, PROBLEMS_FILE, RESPONSES_FILE, RESULTS_FILE, RESULTS_JSONL, SUMMARY_FILE, MLFLOW_FILE)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class EvalRequest:
    """What the user asked for; `prepare` turns it into a plan."""

    benchmark: str
    model: str
    data: str | None = None
    limit: int | None = None
    prompt: PromptStyle = "azr"
    max_new_tokens: int | None = None  # None: the config's rollout.max_new_tokens
    step: int | None = None  # a checkpoint step of a run directory (default: the newest)
    out_dir: str | None = None  # None: RUN_DIR/eval/... or runs/eval/...
    tracking_uri: str | None = None  # standalone runs only; None: OUT/mlflow.db
    mlflow: bool = True
    timeout_s: float | None = None  # per problem in the sandbox; None: sandbox.timeout_s
    preset: str | None = None  # ignored for a run directory that has a config.yaml
    config_file: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)
    samples: int = 1  # n answers per problem; > 1 samples at `temperature` and reports pass@k
    temperature: float | None = None  # None: greedy for one sample, 1.0 for several
    since: str | None = None  # LiveCodeBench date window (YYYY-MM-DD), inclusive
    until: str | None = None
    backend: str = "auto"  # auto | transformers | vllm
    parent_run_id: str | None = None  # log under this MLflow run (a suite's run) instead


@dataclass(frozen=True)
class Plan:
    """Everything the later stages need, as stored in plan.json."""

    benchmark: str
    key: str
    data: str | None
    limit: int | None
    prompt: PromptStyle
    max_new_tokens: int
    model: str  # as given
    resolved_model: str  # the model --model names (a checkpoint's export for a run directory)
    label: str
    step: int | None
    run_dir: str | None
    run_info: dict[str, str] | None
    tracking_uri: str | None
    mlflow: bool
    problems: int
    config: dict[str, Any]
    load_from: str = ""  # where generation loads the model: OUT/model (hard links) or resolved_model
    samples: int = 1
    temperature: float | None = None
    since: str | None = None
    until: str | None = None
    backend: str = "auto"
    parent_run_id: str | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)  # unusable rows (SkippedRow), scored as failures

    def same_evaluation(self, other: Plan) -> bool:
        """Equal in everything but where the model files are read from."""
        return replace(self, load_from="") == replace(other, load_from="")

    @property
    def run_config(self) -> AZRConfig:
        return AZRConfig.model_validate(self.config)


def _config_for(request: EvalRequest, target: ModelTarget) -> tuple[AZRConfig, str]:
    """The run config the model is evaluated with, and a note on where it came from."""
    note = ""
    if target.run_config is not None:
        if request.preset or request.config_file:
            note = f"using the run's own {target.run_config}; a preset or config file is ignored for a run directory"
        config = build_config(None, target.run_config, request.overrides)
    else:
        preset = chosen_preset(request.preset, request.config_file)
        config = build_config(preset, Path(request.config_file) if request.config_file else None, request.overrides)
    model = config.model.model_copy(update={"name_or_path": target.model})
    if target.checkpoint is not None:
        model = model.model_copy(update={"revision": None})
    sandbox = config.sandbox
    if request.timeout_s is not None:
        sandbox = sandbox.model_copy(update={"timeout_s": request.timeout_s, "cpu_time_s": max(1, math.ceil(request.timeout_s))})
    return config.model_copy(update={"model": model, "sandbox": sandbox}), note


def default_out_dir(key: str, target: ModelTarget, prompt: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if target.run_dir is not None:
        return target.run_dir / "eval" / f"{key}-{prompt}-step{target.step:08d}-{stamp}"
    return Path("runs") / "eval" / f"{key}-{prompt}-{target.label}-{stamp}"


_KINDS: dict[str, type] = {
    "code": CodeProblem, "reasoning": ReasoningProblem, "plus": PlusProblem, "livecode": LiveCodeProblem,
    "math": MathProblem,
}


def _problem_json(problem: Problem) -> dict[str, Any]:
    data = asdict(problem)
    data["kind"] = next(name for name, kind in _KINDS.items() if isinstance(problem, kind))
    if isinstance(problem, ReasoningProblem):
        data["task"] = problem.task.value
    return data


def _problem_from_json(data: dict[str, Any]) -> Problem:
    kind = data.pop("kind")
    if kind == "reasoning":
        return ReasoningProblem(**{**data, "task": TaskType(data["task"])})
    if kind == "math":
        return MathProblem(**{**data, "answers": tuple(data["answers"])})
    return _KINDS[kind](**data)


def read_plan(out_dir: Path) -> Plan:
    path = Path(out_dir) / PLAN_FILE
    try:
        return Plan(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise EvalDataError(f"{out_dir} has no {PLAN_FILE}: run the prepare stage first") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise EvalDataError(f"{path} is unreadable or from another version: {exc}") from exc


def read_problems(out_dir: Path) -> list[Problem]:
    lines = (Path(out_dir) / PROBLEMS_FILE).read_text(encoding="utf-8").splitlines()
    return [_problem_from_json(json.loads(line)) for line in lines if line.strip()]


def prepare(request: EvalRequest, *, force: bool = False) -> tuple[Path, list[str]]:
    """Resolve the request, load the problems and write the plan; (output dir, notes).

    An output directory holding the same plan is resumed; one holding another plan is refused
    unless `force`, which clears its stage files first.
    """
    if request.prompt not in PROMPT_STYLES:
        raise EvalDataError(f"--prompt {request.prompt!r} is not one of: {', '.join(PROMPT_STYLES)}")
    if request.max_new_tokens is not None and request.max_new_tokens < 1:
        raise EvalDataError(f"--max-new-tokens must be at least 1, got {request.max_new_tokens}")
    if request.samples < 1:
        raise EvalDataError(f"--samples must be at least 1, got {request.samples}")
    if request.temperature is not None and request.temperature < 0:
        raise EvalDataError(f"--temperature must be >= 0, got {request.temperature}")
    if request.samples > 1 and request.temperature == 0:
        raise EvalDataError("--samples above 1 needs a temperature above 0 (greedy answers are all the same)")
    if request.backend not in BACKENDS:
        raise EvalDataError(f"--backend {request.backend!r} is not one of: {', '.join(BACKENDS)}")
    benchmark = get_benchmark(request.benchmark)
    target = resolve_target(request.model, request.step)
    config, config_note = _config_for(request, target)
    problems = benchmark.load(
        request.data, request.limit, since=parse_date(request.since, "--since"), until=parse_date(request.until, "--until")
    )
    key = benchmark.metric_key(request.data)
    out_dir = Path(request.out_dir) if request.out_dir else default_out_dir(key, target, request.prompt)
    plan = Plan(
        benchmark=benchmark.name, key=key, data=request.data, limit=request.limit, prompt=request.prompt,
        max_new_tokens=request.max_new_tokens or benchmark.max_new_tokens or config.rollout.max_new_tokens,
        model=request.model,
        resolved_model=target.model, label=target.label, step=target.step,
        run_dir=str(target.run_dir.resolve()) if target.run_dir is not None else None,
        run_info=asdict(target.run_info) if target.run_info is not None else None,
        tracking_uri=request.tracking_uri, mlflow=request.mlflow, problems=len(problems),
        config=config.model_dump(mode="json"), load_from=target.model, samples=request.samples,
        temperature=request.temperature, since=request.since, until=request.until, backend=request.backend,
        parent_run_id=request.parent_run_id, skipped=[asdict(row) for row in getattr(problems, "skipped", ())],
    )
    notes = [n for n in (target.note, config_note) if n] + skipped_notes(problems)
    if target.run_dir is not None and target.run_info is None and request.mlflow:
        notes.append(f"{target.run_dir} has no run.json: the evaluation is logged as a standalone run")
    if out_dir.is_file():
        raise EvalDataError(f"--out {out_dir} is a file, not a directory")
    plan_path = out_dir / PLAN_FILE
    if plan_path.exists() and not force:
        if not read_plan(out_dir).same_evaluation(plan):
            raise EvalDataError(
                f"{out_dir} holds another evaluation (its {PLAN_FILE} differs); choose another --out or pass --force"
            )
        notes.append(f"resuming the evaluation in {out_dir}")
        return out_dir, notes
    for name in STAGE_FILES:
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    if target.checkpoint is not None:
        if pin_export(Path(target.model), out_dir / "model"):
            plan = replace(plan, load_from=str((out_dir / "model").resolve()))
        else:
            notes.append(f"could not hard-link {target.model} into {out_dir}: if the training run prunes this "
                         "checkpoint before the model is loaded, the evaluation fails")
    atomic_write_text(out_dir / PROBLEMS_FILE, "".join(json.dumps(_problem_json(p)) + "\n" for p in problems))
    atomic_write_json(plan_path, asdict(plan))
    return out_dir, notes


def vllm_available() -> bool:
    """Whether `--backend auto` should pick vLLM: a CUDA device and a vLLM to run it with (the
    project's environment, $AZR_VLLM_PYTHON or ./.venv-vllm). On CPU, transformers is chosen."""
    import importlib.util
    import os

    import torch

    if not torch.cuda.is_available():
        return False
    venv = Path.cwd() / ".venv-vllm" / "bin" / "python"
    return importlib.util.find_spec("vllm") is not None or bool(os.environ.get("AZR_VLLM_PYTHON")) or venv.exists()


def load_backend(config: AZRConfig, backend: str = "transformers", work_dir: Path | None = None,
                 max_new_tokens: int | None = None) -> tuple[Any, Any]:
    """(generation backend, tokenizer) for the configured model, for inference only.

    `vllm` (or `auto` where vLLM is available) starts a vLLM engine in the mode of
    `rollout.vllm.mode`, sized for `max_new_tokens` beyond the longest prompt setting."""
    import importlib.util

    from azr.engine.rollout.transformers_backend import TransformersBackend
    from azr.engine.models.loading import compute_dtype, default_device, load_model

    device = default_device()
    model, tokenizer = load_model(config.model, device, for_training=False, seed=config.seed)
    dtype = compute_dtype(config.model, device)
    if backend == "vllm" or (backend == "auto" and vllm_available()):
        import tempfile

        from azr.engine.rollout.vllm.backend import create_vllm_backend

        rollout = config.rollout
        if max_new_tokens is not None and max_new_tokens > rollout.max_new_tokens:
            rollout = rollout.model_copy(update={"max_new_tokens": max_new_tokens})
        if rollout.vllm.mode == "colocate" and importlib.util.find_spec("vllm") is None:
            # the presets' hybrid layout lives in a training engine; standing alone here, without
            # vLLM in this environment, vLLM runs as a server in its own (vllm_server.find_vllm_python)
            rollout = rollout.model_copy(update={"vllm": rollout.vllm.model_copy(update={"mode": "server"})})
        config = config.model_copy(update={"rollout": rollout})
        directory = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="azr-eval-vllm-"))
        return create_vllm_backend(config, model, tokenizer, directory, dtype), tokenizer
    backend_object = TransformersBackend.from_rollout(model, tokenizer, config.rollout, compute_dtype=dtype)
    return backend_object, tokenizer


def generate(out_dir: Path, *, backend: Any = None, tokenizer: Any = None, on_progress: Progress | None = None,
             on_loaded: Callable[[int], None] | None = None) -> Path:
    """Answer every problem's prompt; skipped when responses.parquet exists.

    `backend`/`tokenizer` replace loading the plan's model (tests, or a resident engine).
    `on_loaded` is told how many prompts there are once the model is ready.
    """
    out_dir = Path(out_dir)
    path = out_dir / RESPONSES_FILE
    if path.exists():
        return path
    plan = read_plan(out_dir)
    config = plan.run_config
    if plan.load_from and plan.load_from != config.model.name_or_path:
        config = config.model_copy(update={"model": config.model.model_copy(update={"name_or_path": plan.load_from})})
    problems = read_problems(out_dir)
    own_backend = backend is None
    if own_backend:
        backend, tokenizer = load_backend(config, plan.backend, out_dir / "vllm", plan.max_new_tokens)
    try:
        _generate_into(path, plan, problems, config, backend, tokenizer, on_progress, on_loaded)
    finally:
        if own_backend and hasattr(backend, "close"):
            backend.close()
    return path


def _generate_into(path: Path, plan: Plan, problems: list[Problem], config: AZRConfig, backend: Any, tokenizer: Any,
                   on_progress: Progress | None, on_loaded: Callable[[int], None] | None) -> None:
    from azr.eval.generate import answer_prompts, decoding
    from azr.eval.prompting.azr_prompts import build_prompts
    from azr.selfplay.prompts.chat_format import make_wrapper

    wrapper = make_wrapper(config.model.prompt_wrapper, tokenizer) if plan.prompt == "azr" else None
    prompts = build_prompts(problems, plan.prompt, wrapper)
    if on_loaded is not None:
        on_loaded(len(prompts))
    settings = decoding(plan.max_new_tokens, plan.samples, plan.temperature, seed=config.seed)
    records = answer_prompts(
        backend, [p.id for p in problems], prompts, settings,
        chunk_size=config.rollout.generation_batch_size, on_progress=on_progress,
    )
    columns: dict[str, list[Any]] = {name: [] for name in EVAL_RESPONSES_SCHEMA.names}
    for record in records:
        for name in EVAL_RESPONSES_SCHEMA.names:
            columns[name].append(plan.benchmark if name == "benchmark" else getattr(record, name))
    write_parquet_atomic(pa.Table.from_pydict(columns, schema=EVAL_RESPONSES_SCHEMA), path)


def read_responses(out_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(Path(out_dir) / RESPONSES_FILE, schema=EVAL_RESPONSES_SCHEMA).to_pylist()


def score(out_dir: Path, *, executor: Any = None, on_progress: Progress | None = None) -> dict[str, Any]:
    """Score the responses in the sandbox; returns the summary (skipped when it exists)."""
    from azr.eval.scoring.code_benchmarks import needs_sandbox, sandbox_for
    from azr.eval.evaluate import score_responses
    from azr.sandbox import SandboxExecutor

    out_dir = Path(out_dir)
    summary_path = out_dir / SUMMARY_FILE
    if summary_path.exists() and (out_dir / RESULTS_FILE).exists():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    plan = read_plan(out_dir)
    problems = read_problems(out_dir)
    responses = read_responses(out_dir)
    by_id = {p.id: p for p in problems}
    expected_ids = [p.id for p in problems for _ in range(plan.samples)]
    if [r["id"] for r in responses] != expected_ids:
        raise EvalDataError(f"{out_dir / RESPONSES_FILE} does not match {PROBLEMS_FILE}; rerun with --force")
    own_executor = executor is None and needs_sandbox(problems)
    if own_executor:
        executor = SandboxExecutor(sandbox_for(problems, plan.run_config.sandbox))
    try:
        rows = score_responses(
            plan.benchmark, [by_id[r["id"]] for r in responses], [r["prompt"] for r in responses],
            [r["response"] for r in responses], plan.prompt, executor, response_prefix=RESPONSE_PREFIX,
            finish_reasons=[r["finish_reason"] for r in responses],
            response_tokens=[r["response_tokens"] for r in responses],
            samples=[r["sample"] or 0 for r in responses], on_progress=on_progress,
        )
    finally:
        if own_executor:
            executor.close()
    rows = [*rows, *skipped_rows(plan.benchmark, plan.skipped, plan.samples, rows)]
    write_results(rows, out_dir)
    summary = describe(plan, rows)
    write_summary(summary, out_dir)
    return summary


def skipped_rows(benchmark: str, skipped: Sequence[dict[str, Any]], samples: int,
                 rows: Sequence[ResultRow]) -> list[ResultRow]:
    """A failed result for every sample of every row the benchmark file could not give (the
    denominator is the file's size; the reason is kept in the row's `error`)."""
    base = False if any(row.base_correct is not None for row in rows) else None
    return [ResultRow(benchmark, str(row["id"]), None, None, None, "", False, "unusable_row",
                      f"{row['where']}: {row['reason']}", sample=sample, base_correct=base)
            for row in skipped for sample in range(samples)]


def decoding_label(plan: Plan) -> str:
    if plan.samples == 1 and not plan.temperature:
        return "greedy"
    return f"sampled n={plan.samples} T={1.0 if plan.temperature is None else plan.temperature:g}"


def describe(plan: Plan, rows: Sequence[ResultRow]) -> dict[str, Any]:
    """The summary: the numbers plus what was evaluated and how."""
    numbers = summarise(rows)
    return {
        **numbers, "benchmark": plan.benchmark, "key": plan.key, "model": plan.model,
        "resolved_model": plan.resolved_model, "step": plan.step, "prompt": plan.prompt,
        "max_new_tokens": plan.max_new_tokens, "decoding": decoding_label(plan), "samples": plan.samples,
        "data": plan.data, "limit": plan.limit,
        "metrics": metrics_from_summary(plan.key, numbers),
    }


def log(out_dir: Path) -> str | None:
    """Log the evaluation to MLflow; its run id (None when logging is off). Done once."""
    from azr.eval.mlflow_run import log_evaluation, nested_tracking, parent_tracking, standalone_tracking

    out_dir = Path(out_dir)
    done = out_dir / MLFLOW_FILE
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))["run_id"]
    plan = read_plan(out_dir)
    if not plan.mlflow:
        return None
    summary = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    if plan.parent_run_id is not None:
        target = parent_tracking(plan.tracking_uri or "", plan.parent_run_id)
    elif plan.run_info is not None:
        target = nested_tracking(RunInfo(**plan.run_info))
    else:
        target = standalone_tracking(plan.tracking_uri, out_dir)
    config = plan.run_config
    params = {
        "benchmark": plan.benchmark, "data": plan.data or "default", "limit": plan.limit or "all",
        "prompt": plan.prompt, "max_new_tokens": plan.max_new_tokens, "decoding": decoding_label(plan),
        "samples": plan.samples, "backend": plan.backend,
        "model": plan.model, "resolved_model": plan.resolved_model,
        "checkpoint_step": plan.step if plan.step is not None else "none",
        "problems": plan.problems, "model.prompt_wrapper": config.model.prompt_wrapper, "model.dtype": config.model.dtype,
        "sandbox.timeout_s": config.sandbox.timeout_s, "sandbox.isolation": config.sandbox.isolation,
    }
    tags = {"azr.benchmark": plan.benchmark, "azr.model": plan.model}
    if plan.run_dir is not None:
        tags["azr.run_dir"] = plan.run_dir
    run_name = f"eval-{plan.key}-{plan.label}"
    artifacts = [out_dir / RESULTS_FILE, out_dir / SUMMARY_FILE, out_dir / PLAN_FILE]
    run_id = log_evaluation(
        target, run_name=run_name, params=params, metrics=summary["metrics"], tags=tags,
        artifacts=artifacts, step=plan.step or 0,
    )
    atomic_write_json(done, {"run_id": run_id, "tracking_uri": target.tracking_uri, "parent_run_id": target.parent_run_id})
    return run_id
