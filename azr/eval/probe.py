"""The frozen probe: did self-play teach the model anything?

Training rates (format, valid proposals, solve accuracy) move with what the model proposes to
itself, so they cannot say whether it learned. The probe is a fixed set of deduction, abduction
and induction tasks (`trainer.probe_file`, e.g. the cpu preset's probes/cpu_probe.jsonl, built
by scripts/make_probe_set.py and never put in a buffer), answered greedily with the run's own
solve prompts before training (step 0) and every `trainer.probe_every` iterations (and at the
last). The same items every time, so before/after results pair up item by item for the
verdict's McNemar test (azr/eval/learning_verdict.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azr.config.schema import AZRConfig
from azr.eval.generate import answer_prompts, greedy
from azr.eval.scoring.stats import Accuracy, accuracy_of
from azr.sandbox.api import Executor
from azr.selfplay.prompts.paper import solve_prompt_for
from azr.selfplay.seed_tasks import resolve_seed_path
from azr.selfplay.solution_scoring import score_solutions
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType

PROBE_TYPES = (TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION)


class ProbeFileError(ValueError):
    """The probe file is missing or malformed."""


@dataclass(frozen=True)
class ProbeItem:
    id: str
    task_type: TaskType
    task: Triplet | InductionTask


@dataclass(frozen=True)
class ProbeResult:
    """Greedy right/wrong per probe item at one step (0: before training)."""

    step: int
    correct: dict[str, bool]  # item id -> answered correctly
    types: dict[str, str]  # item id -> task type
    formatted: dict[str, bool] = field(default_factory=dict)  # item id -> think/answer format kept

    def accuracy(self, task_type: str | None = None) -> Accuracy:
        return accuracy_of([ok for item, ok in self.correct.items() if task_type in (None, self.types[item])])

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "correct": self.correct, "types": self.types, "formatted": self.formatted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(int(data["step"]), {k: bool(v) for k, v in data["correct"].items()}, dict(data["types"]),
                   {k: bool(v) for k, v in data.get("formatted", {}).items()})


def load_probe_set(path: Path | str) -> list[ProbeItem]:
    """The items of a probe JSONL; a relative path not found here is looked up beside the presets."""
    resolved = resolve_seed_path(Path(path))
    if not resolved.is_file():
        raise ProbeFileError(f"{path}: probe file not found; set trainer.probe_file to a JSONL written by "
                             "scripts/make_probe_set.py, or trainer.probe_every=0 to run without a probe")
    items: list[ProbeItem] = []
    for number, line in enumerate(resolved.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{resolved}:{number}"
        try:
            row = json.loads(line)
            kind = TaskType(row["task_type"])
            imports = tuple(row.get("imports", ()))
            if kind is TaskType.INDUCTION:
                task: Triplet | InductionTask = InductionTask(row["program"], tuple(row["inputs"]), tuple(row["outputs"]),
                                                              row["message"], imports)
                if len(task.inputs) != len(task.outputs) or len(task.inputs) < 2:
                    raise ProbeFileError(f"{where}: an induction item needs as many outputs as inputs, at least 2")
            else:
                task = Triplet(row["program"], row["input"], row["output"], imports)
            items.append(ProbeItem(str(row["id"]), kind, task))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProbeFileError):
                raise
            raise ProbeFileError(f"{where}: not a probe item ({type(exc).__name__}: {exc}); rows need id, task_type "
                                 "and the task's fields (program with input/output, or inputs/outputs/message)") from exc
    if not items:
        raise ProbeFileError(f"{resolved}: no probe items")
    if len({item.id for item in items}) != len(items):
        raise ProbeFileError(f"{resolved}: item ids repeat; each item needs its own id for the paired test")
    return items


def probe_prompts(items: Sequence[ProbeItem], config: AZRConfig, wrapper: Any) -> list[str]:
    """The run's own solve prompts (its prompt profile and wrapper) for the probe items."""
    return [wrapper.wrap(solve_prompt_for(item.task_type, item.task, config.tasks.prompt_profile)) for item in items]


def evaluate_probe(policy: Any, items: Sequence[ProbeItem], config: AZRConfig, executor: Executor, wrapper: Any,
                   step: int) -> ProbeResult:
    """Answer every item greedily with `policy` and score it in the sandbox as a solve is scored;
    an item is correct only when fully solved (every hidden pair for induction)."""
    prompts = probe_prompts(items, config, wrapper)
    records = answer_prompts(policy, [item.id for item in items], prompts, greedy(config.rollout.max_new_tokens),
                             chunk_size=config.rollout.generation_batch_size)
    responses = {record.id: record.response for record in records}
    correct: dict[str, bool] = {}
    formatted: dict[str, bool] = {}
    for kind in PROBE_TYPES:
        chosen = [item for item in items if item.task_type is kind]
        if not chosen:
            continue
        outcomes = score_solutions(kind, [item.task for item in chosen], [responses[item.id] for item in chosen],
                                   executor, config.reward, wrapper.response_prefix)
        for item, outcome in zip(chosen, outcomes, strict=True):
            correct[item.id] = outcome.accuracy is not None and outcome.accuracy >= 1.0
            formatted[item.id] = bool(outcome.format_ok)
    ordered = [item.id for item in items]
    return ProbeResult(step, {i: correct[i] for i in ordered}, {item.id: item.task_type.value for item in items},
                       {i: formatted[i] for i in ordered})


def probe_metrics(result: ProbeResult) -> dict[str, float]:
    """`probe/<type>/accuracy` with its 95% Wilson interval (`ci_low`, `ci_high`) and item count,
    and the same for `probe/overall`."""
    metrics: dict[str, float] = {}
    kinds = [kind.value for kind in PROBE_TYPES if kind.value in result.types.values()]
    for name in [*kinds, "overall"]:
        accuracy = result.accuracy(None if name == "overall" else name)
        metrics.update({f"probe/{name}/accuracy": accuracy.accuracy, f"probe/{name}/ci_low": accuracy.ci_low,
                        f"probe/{name}/ci_high": accuracy.ci_high, f"probe/{name}/items": float(accuracy.total)})
    if result.formatted:
        metrics["probe/overall/format_rate"] = sum(result.formatted.values()) / len(result.formatted)
    return metrics


def probe_due(config: AZRConfig, step: int, last_step: int) -> bool:
    """Before training (step 0), every `trainer.probe_every` iterations, and at the last one."""
    every = config.trainer.probe_every
    if not every or config.trainer.probe_file is None:
        return False
    return step == 0 or step % every == 0 or step == last_step
