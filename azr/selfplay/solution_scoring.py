"""Scoring solutions and estimating proposal learnability through the executor (docs/algorithm.md §6.3, §7).

Answers are handed to the executor as data inside check objects, never spliced into source
here. Identical checks within a call are sent once (the original cached identical answers).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

from azr.config.schema import RewardConfig
from azr.sandbox.api import AbductionCheck, Check, DeductionCheck, Executor, InductionCheck, Verdict
from azr.selfplay.parsing import THINK_PREFIX, ParseFailure, answer_of_whole_response, parse_generation, parse_solution
from azr.selfplay.rejection import Reason
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.rewards import mean_accuracy, solve_accuracy, solver_reward
from azr.selfplay.task_types import TaskType


@dataclass(frozen=True)
class SolveOutcome:
    format_ok: bool
    answer: str | None  # the parsed input/output/program; None when parsing failed
    accuracy: float | None  # None: not scored (parse failure or the check could not run)
    reward: float
    reason: Reason | None = None


@dataclass(frozen=True)
class Learnability:
    solve_rate: float  # mean accuracy of the Monte-Carlo solves
    scored: int  # rollouts that could be scored


def build_check(task_type: TaskType, task: Triplet | InductionTask, answer: str, comparison: str = "namespace") -> Check:
    """The executor check that decides whether `answer` solves `task`; `comparison` is
    `reward.answer_comparison`."""
    expected = InductionTask if task_type is TaskType.INDUCTION else Triplet
    if not isinstance(task, expected):
        raise TypeError(f"a {task_type.value} check needs a {expected.__name__}, got {type(task).__name__}")
    if isinstance(task, InductionTask):
        hidden = task.hidden_pairs
        return InductionCheck(
            candidate_program=answer,
            inputs=tuple(i for i, _ in hidden),
            outputs=tuple(o for _, o in hidden),
            imports=task.imports,
            gold_program=task.program,
            comparison=comparison,
        )
    if task_type is TaskType.DEDUCTION:
        return DeductionCheck(gold_output=task.output, answer=answer, program=task.program, gold_input=task.input,
                              comparison=comparison)
    return AbductionCheck(program=task.program, gold_output=task.output, answer_input=answer, gold_input=task.input,
                          comparison=comparison)


def verify_unique(executor: Executor, checks: Sequence[Check | None]) -> list[Verdict | None]:
    """Run each distinct check once; None entries stay None."""
    unique = list(dict.fromkeys(c for c in checks if c is not None))
    verdicts = dict(zip(unique, executor.verify(unique))) if unique else {}
    return [verdicts[c] if c is not None else None for c in checks]


def _parse_answers(
    task_type: TaskType, tasks: Sequence[Triplet | InductionTask], responses: Sequence[str], prefix: str,
    config: RewardConfig, monte_carlo: bool = False,
) -> tuple[list[bool], list[str | ParseFailure], list[Check | None]]:
    """Format, parsed answer and check of each response. With `solver_parsing: original`, a
    Monte-Carlo answer is the last <answer> of the whole response, as the original read them."""
    strict = config.solver_parsing == "original"
    formats, answers, checks = [], [], []
    for task, response in zip(tasks, responses, strict=True):
        generation = parse_generation(response, prefix)
        content = answer_of_whole_response(response) if monte_carlo and strict else generation.answer
        answer = parse_solution(task_type, content, strict)
        formats.append(generation.format_ok)
        answers.append(answer)
        checks.append(None if isinstance(answer, ParseFailure)
                      else build_check(task_type, task, answer, config.answer_comparison))
    return formats, answers, checks


def score_solutions(
    task_type: TaskType,
    tasks: Sequence[Triplet | InductionTask],
    responses: Sequence[str],
    executor: Executor,
    config: RewardConfig,
    prefix: str = THINK_PREFIX,
) -> list[SolveOutcome]:
    """Solver rewards for one solve batch: response i answers task i."""
    formats, answers, checks = _parse_answers(task_type, tasks, responses, prefix, config)
    verdicts = verify_unique(executor, checks)
    outcomes = []
    for format_ok, answer, verdict in zip(formats, answers, verdicts):
        if isinstance(answer, ParseFailure):
            # Induction without a code block: its format score is forced to 0 (docs/algorithm.md §4.3).
            outcomes.append(SolveOutcome(False, None, None, config.format_error, answer.reason))
            continue
        accuracy = solve_accuracy(task_type, verdict, config.induction_scoring) if verdict else None
        outcomes.append(
            SolveOutcome(format_ok, answer, accuracy, solver_reward(format_ok, accuracy, config))
        )
    return outcomes


def estimate_learnability(
    task_type: TaskType,
    tasks: Sequence[Triplet | InductionTask],
    rollouts: Sequence[Sequence[str]],
    executor: Executor,
    config: RewardConfig,
    prefix: str = THINK_PREFIX,
) -> list[Learnability]:
    """Solve rate of each task from its Monte-Carlo solver responses (docs/algorithm.md §7.2).

    Only the answer is extracted; the think/answer format is not required here. A rollout
    whose answer cannot be parsed scores 0; one whose check could not run is left out.
    """
    flat_tasks = [task for task, samples in zip(tasks, rollouts, strict=True) for _ in samples]
    flat_responses = [response for samples in rollouts for response in samples]
    _, answers, checks = _parse_answers(task_type, flat_tasks, flat_responses, prefix, config, monte_carlo=True)
    verdicts = verify_unique(executor, checks)
    accuracies: list[float | None] = []
    for answer, verdict in zip(answers, verdicts):
        if isinstance(answer, ParseFailure):
            accuracies.append(0.0)
        else:
            accuracies.append(solve_accuracy(task_type, verdict, config.induction_scoring) if verdict else None)
    results, start = [], 0
    for samples in rollouts:
        chunk = accuracies[start : start + len(samples)]
        start += len(samples)
        results.append(Learnability(mean_accuracy(chunk), sum(a is not None for a in chunk)))
    return results
