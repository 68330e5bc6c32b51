"""From responses (or a prediction file) to per-problem result rows.

Shared by the command line, the evaluation flow and the in-training evaluation, so a number
means the same thing wherever it was computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from azr.eval.predictions import PredictionReport
from azr.eval.benchmarks.problems import Problem
from azr.eval.prompting.azr_prompts import PromptStyle, extract_prediction
from azr.eval.results import ResultRow
from azr.eval.scoring.reasoning import ProblemScore, score_predictions
from azr.sandbox.api import Executor

SCORE_CHUNK = 64  # problems per executor call: small enough for a moving progress bar


def _score_in_chunks(
    problems: Sequence[Problem],
    predictions: Sequence[str | None],
    executor: Executor,
    on_progress: Callable[[int], None] | None,
) -> list[ProblemScore]:
    scores: list[ProblemScore] = []
    for start in range(0, len(problems), SCORE_CHUNK):
        part = slice(start, start + SCORE_CHUNK)
        scores.extend(score_predictions(problems[part], predictions[part], executor))
        if on_progress is not None:
            on_progress(len(problems[part]))
    return scores


def score_responses(
    benchmark: str,
    problems: Sequence[Problem],
    prompts: Sequence[str],
    responses: Sequence[str],
    style: PromptStyle,
    executor: Executor,
    *,
    response_prefix: str = "<think>",
    finish_reasons: Sequence[str] | None = None,
    response_tokens: Sequence[int] | None = None,
    samples: Sequence[int] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[ResultRow]:
    """Extract each response's prediction and score it; one row per response, in order
    (`problems` repeats a problem once per sample when there are several)."""
    if not len(problems) == len(prompts) == len(responses):
        raise ValueError(f"{len(problems)} problems, {len(prompts)} prompts and {len(responses)} responses")
    extracted = [extract_prediction(p, r, style, response_prefix) for p, r in zip(problems, responses)]
    scores = _score_in_chunks(problems, [e.prediction for e in extracted], executor, on_progress)
    return [
        ResultRow(
            benchmark=benchmark, id=problem.id, prompt=prompt, response=response, prediction=found.prediction,
            scored_prediction=score.scored_prediction, correct=score.correct, status=score.status, error=score.error,
            format_ok=found.format_ok,
            finish_reason=finish_reasons[i] if finish_reasons is not None else None,
            response_tokens=response_tokens[i] if response_tokens is not None else None,
            sample=samples[i] if samples is not None else 0, base_correct=score.base_correct,
        )
        for i, (problem, prompt, response, found, score) in enumerate(zip(problems, prompts, responses, extracted, scores))
    ]


def score_report(
    benchmark: str,
    problems: Sequence[Problem],
    report: PredictionReport,
    executor: Executor,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> list[ResultRow]:
    """Score a prediction file's predictions; a problem without one is a `missing` row."""
    predictions = report.for_problems([p.id for p in problems])
    scores = _score_in_chunks(problems, predictions, executor, on_progress)
    return [
        ResultRow(
            benchmark=benchmark, id=problem.id, prompt=None, response=None, prediction=prediction,
            scored_prediction=score.scored_prediction, correct=score.correct, status=score.status, error=score.error,
            base_correct=score.base_correct,
        )
        for problem, prediction, score in zip(problems, predictions, scores)
    ]
