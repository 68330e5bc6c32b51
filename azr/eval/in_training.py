"""Evaluation inside a training run: the resident policy on a configured subset (docs/algorithm.md §11.3).

The training flow calls `evaluate_policy` every `eval_every` iterations. It generates with the
policy's own backend (greedy), scores with the run's executor, and returns metrics named as in a
standalone evaluation (`eval/<key>/accuracy`, ...), which the flow logs to the training run at
the iteration's step. The same first `limit` problems are used every time, so the curve over
iterations compares like with like.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azr.config.schema import AZRConfig
from azr.eval.benchmarks.registry import SUITES, get_benchmark
from azr.eval.evaluate import score_responses
from azr.eval.generate import answer_prompts, greedy
from azr.eval.benchmarks.problems import EvalDataError, Problem
from azr.eval.prompting.azr_prompts import PROMPT_STYLES, PromptStyle, build_prompts
from azr.eval.results import metrics_from_summary, summarise, write_results
from azr.sandbox.api import Executor
from azr.selfplay.prompts.chat_format import RESPONSE_PREFIX, make_wrapper

logger = logging.getLogger(__name__)

BenchmarkSpec = tuple[str, str | Path | None]  # (benchmark name, data: file, hub id, or None for the default)


def expand_specs(benchmarks: Sequence[BenchmarkSpec], data_dir: str | None = None) -> list[BenchmarkSpec]:
    """Suite names (`paper`) replaced by their benchmarks; a benchmark without data takes its
    file from `data_dir` when it is there (the suite's layout, azr/eval/suite.py)."""
    from azr.eval.suite import data_in_directory

    out: list[BenchmarkSpec] = []
    for name, data in benchmarks:
        members = SUITES.get(str(name).strip().lower())
        for member in members or (name,):
            source = data if members is None else None
            if source is None:
                source = data_in_directory(get_benchmark(member).name, data_dir)
            if all(get_benchmark(member).name != get_benchmark(n).name for n, _ in out):
                out.append((member, source))
    return out


def _score(name: str, problems: list[Problem], prompts: list[str], records: list[Any], prompt: PromptStyle,
           executor: Executor, config: AZRConfig) -> list[Any]:
    """Score with the run's executor, or, for code generation whose tests need longer limits
    than the run's sandbox gives, with an executor of its own for the time of the scoring."""
    from azr.eval.scoring.code_benchmarks import sandbox_for

    sandbox = sandbox_for(problems, config.sandbox)
    own = None
    if sandbox != config.sandbox:
        from azr.sandbox import SandboxExecutor

        own = SandboxExecutor(sandbox)
    try:
        return score_responses(
            name, problems, prompts, [r.response for r in records], prompt, own or executor,
            response_prefix=RESPONSE_PREFIX, finish_reasons=[r.finish_reason for r in records],
            response_tokens=[r.response_tokens for r in records],
        )
    finally:
        if own is not None:
            own.close()


@functools.lru_cache(maxsize=16)
def _problems(name: str, data: str | None, limit: int | None) -> tuple[Problem, ...]:
    """Loaded once per process: the data does not change during a run."""
    return tuple(get_benchmark(name).load(data, limit))


# Benchmarks whose data could not be loaded in this process (offline, no file): said once,
# then skipped, so a run on an offline machine goes on without them.
_UNAVAILABLE: dict[tuple[str, str | None], str] = {}


def _available_problems(name: str, data: str | None, limit: int | None) -> list[Problem] | None:
    """The benchmark's problems, or None (with one warning per run) when its data cannot be had."""
    key = (name, data)
    if key in _UNAVAILABLE:
        return None
    try:
        problems = list(_problems(name, data, limit))
    except EvalDataError as exc:
        _UNAVAILABLE[key] = str(exc)
        logger.warning("in-training evaluation skips %s for the rest of the run: its data cannot be loaded (%s). "
                       "Put the file in eval.data (or eval.data_dir) to evaluate it offline.", name, exc)
        return None
    if not problems:
        _UNAVAILABLE[key] = "no problems"
        logger.warning("in-training evaluation skips %s for the rest of the run: it has no problems", name)
        return None
    return problems


def evaluate_policy(
    policy: Any,
    config: AZRConfig,
    benchmarks: Sequence[BenchmarkSpec],
    limit: int | None,
    executor: Executor,
    *,
    max_new_tokens: int | None = None,
    prompt: PromptStyle = "azr",
    out_dir: Path | None = None,
) -> dict[str, float]:
    """Accuracy (with its 95% interval and a few diagnostics) of `policy` on each benchmark.

    A benchmark whose data cannot be loaded (an offline machine, a missing file) is skipped with
    one warning for the whole run; the others are evaluated and the run goes on.

    `policy` is anything with `generate(prompts, SamplingSettings)` and, for the azr prompt
    style with a chat wrapper, a `tokenizer` (the resident `azr.engine.rank.policy.Policy`).
    `max_new_tokens` defaults to `config.rollout.max_new_tokens`. With `out_dir`, each
    benchmark's per-problem rows are written to `out_dir/eval_<key>.parquet`.
    """
    if prompt not in PROMPT_STYLES:
        raise ValueError(f"prompt must be one of {', '.join(PROMPT_STYLES)}, got {prompt!r}")
    benchmarks = expand_specs(benchmarks, getattr(config.eval, "data_dir", None))
    wrapper = make_wrapper(config.model.prompt_wrapper, getattr(policy, "tokenizer", None)) if prompt == "azr" else None
    settings = greedy(max_new_tokens or config.rollout.max_new_tokens)
    metrics: dict[str, float] = {}
    for name, data in benchmarks:
        benchmark = get_benchmark(name)
        data_text = str(data) if data is not None else None
        problems = _available_problems(benchmark.name, data_text, limit)
        if problems is None:
            continue
        prompts = build_prompts(problems, prompt, wrapper)
        records = answer_prompts(
            policy, [p.id for p in problems], prompts, settings, chunk_size=config.rollout.generation_batch_size
        )
        rows = _score(benchmark.name, problems, prompts, records, prompt, executor, config)
        key = benchmark.metric_key(data_text)
        metrics.update(metrics_from_summary(key, summarise(rows)))
        if out_dir is not None:
            write_results(rows, Path(out_dir), stem=f"eval_{key}", jsonl=False)
    return metrics
