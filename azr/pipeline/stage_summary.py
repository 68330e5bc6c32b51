"""One log line per finished stage: what it produced and how long it took.

Read back from the stage's own files, so the line is the same whether the stage ran now or
was found done on resume.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from azr.pipeline.registry import (
    BUILD_PROMPTS,
    COMMIT,
    MC_ROLLOUTS,
    PROPOSE,
    REWARDS,
    SAFETY,
    SOLVE,
    UPDATE,
    VALIDATE,
    Stage,
    StageFile,
    parts_of,
)
from azr.pipeline.run_dir import RunDir


def _rate(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 * part / whole:.0f}%)" if whole else "0/0"


def _tokens(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no responses"
    clipped = int((frame["finish_reason"] == "length").sum())
    return f"{frame['response_tokens'].mean():.0f} response tokens on average, {_rate(clipped, len(frame))} cut at the limit"


def _build_prompts(run: RunDir, step: int) -> str:
    propose = pd.read_parquet(run.stage_path(step, StageFile.PROPOSE_PROMPTS), columns=["group"])
    solve = pd.read_parquet(run.stage_path(step, StageFile.SOLVE_PROMPTS), columns=["group"])
    return f"{len(propose)} propose and {len(solve)} solve prompts"


def _propose(run: RunDir, step: int) -> str:
    frame = pd.read_parquet(run.stage_path(step, StageFile.PROPOSALS), columns=["response_tokens", "finish_reason"])
    return f"{len(frame)} proposals, {_tokens(frame)}"


def _validate(run: RunDir, step: int) -> str:
    frame = pd.read_parquet(run.stage_path(step, StageFile.VALIDATED), columns=["valid", "format_ok", "reason"])
    reasons = frame.loc[frame["reason"] != "", "reason"].str.split(":").str[0].value_counts().head(3)
    top = ", ".join(f"{name} {count}" for name, count in reasons.items())
    return (f"valid {_rate(int(frame['valid'].sum()), len(frame))}, well formatted "
            f"{_rate(int(frame['format_ok'].sum()), len(frame))}" + (f"; rejected mostly for {top}" if top else ""))


def _mc_rollouts(run: RunDir, step: int) -> str:
    frame = pd.read_parquet(run.stage_path(step, StageFile.MC_ROLLOUTS), columns=["group", "index", "solve_rate"])
    rates = frame.groupby(["group", "index"])["solve_rate"].first()
    if rates.empty:
        return "no valid proposal to estimate"
    learnable = int(((rates > 0) & (rates < 1)).sum())
    return (f"{len(frame)} Monte-Carlo solves of {len(rates)} proposals, mean solve rate {rates.mean():.2f}, "
            f"learnable (0 < rate < 1) {_rate(learnable, len(rates))}")


def _solve(run: RunDir, step: int) -> str:
    frame = pd.read_parquet(run.stage_path(step, StageFile.SOLUTIONS),
                            columns=["accuracy", "format_ok", "response_tokens", "finish_reason"])
    if frame.empty:
        return "no solve prompts"
    return f"{len(frame)} answers, accuracy {frame['accuracy'].fillna(0.0).mean():.3f}, {_tokens(frame)}"


def _rewards(run: RunDir, step: int) -> str:
    frame = pd.read_parquet(run.stage_path(step, StageFile.SCORED), columns=["role", "reward", "trained"])
    by_role = frame.groupby("role")["reward"].mean()
    roles = ", ".join(f"{role} {value:.3f}" for role, value in by_role.items())
    return f"mean reward {frame['reward'].mean():.3f} ({roles}); {int(frame['trained'].sum())} sequences to train"


def _update(run: RunDir, step: int) -> str:
    update = run.read_json(step, StageFile.UPDATE)
    shown = [f"{name} {update[name]:.4g}" for name in ("loss", "entropy", "grad_norm", "tokens_per_second")
             if isinstance(update.get(name), (int, float))]
    return ", ".join(shown) or "no sequences to train on"


def _commit(run: RunDir, step: int) -> str:
    sizes = run.read_json(step, StageFile.COMMITTED).get("buffer_sizes", {})
    return "buffers " + (", ".join(f"{name} {size}" for name, size in sizes.items()) or "unchanged")


def _safety(run: RunDir, step: int) -> str:
    counts = run.read_json(step, StageFile.SAFETY_COUNTS)
    return f"{counts['flagged']} of {counts['scanned']} responses flagged (judge: {counts['judge']})"


_SUMMARIES: dict[str, Callable[[RunDir, int], str]] = {
    BUILD_PROMPTS.name: _build_prompts, PROPOSE.name: _propose, VALIDATE.name: _validate, MC_ROLLOUTS.name: _mc_rollouts,
    SOLVE.name: _solve, SAFETY.name: _safety, REWARDS.name: _rewards, UPDATE.name: _update, COMMIT.name: _commit,
}
"""What each file-owning stage says; a stage that merges others says theirs, joined."""


def stage_summary(run: RunDir, step: int, stage: Stage) -> str:
    """`iteration 3 propose: 24 proposals, ... (41.2 s)`; `(done before)` when resumed past it."""
    seconds = run.read_json(step, "timings.json").get(stage.name)
    took = f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "done before"
    try:
        what = "; ".join(_SUMMARIES[part.name](run, step) for part in parts_of(stage))
    except (OSError, KeyError, ValueError) as exc:  # a summary must never fail the stage
        what = f"(no summary: {exc})"
    return f"iteration {step} {stage.name.replace('_', ' ')}: {what} ({took})"
