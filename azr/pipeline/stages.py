"""The stages of one self-play iteration, as plain functions: Parquet in, Parquet out.

Each stage reads the files of the stages before it, calls the algorithm, and writes its own
files atomically: the steps of azr/selfplay/iteration.py (read that first), with files so that
a run can be resumed and inspected. Which stages there are, and which files each reads and writes, is the table
in registry.py; `run_stage` skips a stage whose files are complete (`stage_done`), so a killed
iteration resumes from its last complete stage. Nothing here knows about Prefect (flows/ and
tasks/ wrap these).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from azr.pipeline.atomic_io import atomic_write_json, fsync_directory, write_parquet_atomic
from azr.selfplay.iteration_prompts import build_iteration_prompts, prompts_table
from azr.pipeline.buffer_log import commit_step, committed_steps
from azr.ops.disk_use import warn_before_checkpoint
from azr.selfplay.parsing import collect_imports
from azr.engine.api import PolicyHandle
from azr.pipeline.context import RunContext
from azr.pipeline.registry import (
    GENERATE_PROPOSE_SOLVE,
    MC_ROLLOUTS,
    PROPOSE,
    SOLVE,
    UPDATE,
    Stage,
    StageFile,
    overlap_phases,
    parts_of,
    stages_for,
)
from azr.pipeline.run_dir import RunDir
from azr.pipeline.stage_files import stage_complete
from azr.selfplay.proposals import ProposalOutcome, check_proposals
from azr.selfplay.prompts.paper import solve_prompt_for
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.rewards import proposer_reward
from azr.pipeline.schemas import MC_ROLLOUTS_SCHEMA, SAFETY_SCHEMA, SCORED_SCHEMA, VALIDATED_SCHEMA
from azr.selfplay.solution_scoring import estimate_learnability, score_solutions
from azr.selfplay.task_types import Group, Role, TaskType
from azr.selfplay.iteration import mc_prompt_limit, stage_seed, trained_advantages


def _read(res: RunContext, step: int, name: str) -> pd.DataFrame:
    return pd.read_parquet(res.run.stage_path(step, name))


def _write(res: RunContext, step: int, name: str, rows: list[dict], schema: pa.Schema) -> Path:
    path = res.run.stage_path(step, name)
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _write_together(res: RunContext, step: int, parts: list[tuple[str, list[dict], pa.Schema]]) -> None:
    """Several stage files from one piece of work, all or none: every table is built and
    written (fsynced) under a hidden name first, then renamed in the stages' order. A kill
    before the first rename leaves none; between the renames (microseconds) it leaves the
    earlier stages' files, exactly as a run killed after them, and those are complete."""
    tables = [(res.run.stage_path(step, name), pa.Table.from_pylist(rows, schema=schema)) for name, rows, schema in parts]
    pending = []
    for path, table in tables:
        temp = path.with_name(f".{path.name}.pending.tmp")
        write_parquet_atomic(table, temp)
        pending.append((temp, path))
    for temp, path in pending:
        os.replace(temp, path)
    if pending:
        fsync_directory(pending[0][1].parent)


def _generation_rows(keys: list[dict], prompts: list[str], completions: Iterable, version: int) -> list[dict]:
    """Stage rows of generated answers, with the engine's behaviour log-probs and the policy
    version that sampled them (docs/algorithm.md §14)."""
    rows = []
    for key, prompt, completion in zip(keys, prompts, completions, strict=True):
        rows.append({
            **key,
            "prompt": prompt,
            "response": completion.text,
            "prompt_token_ids": list(completion.prompt_token_ids),
            "response_token_ids": list(completion.token_ids),
            "response_tokens": len(completion.token_ids),
            "finish_reason": completion.finish_reason,
            "behaviour_logprobs": None if completion.logprobs is None else list(completion.logprobs),
            "policy_version": version,
        })
    return rows


def _sampling(res: RunContext, step: int, stage: str, *, monte_carlo: bool = False) -> Any:
    from azr.engine.api import SamplingSettings

    seed = stage_seed(res.config.seed, step, stage)
    if monte_carlo:
        return SamplingSettings.monte_carlo(res.config.rollout, seed=seed)
    return SamplingSettings.from_rollout(res.config.rollout, seed=seed)


def _answer_request(res: RunContext, step: int, stage: Stage) -> tuple[pd.DataFrame, Any]:
    """The prompts file a generation stage answers (its one input) and the request that answers
    each prompt once, with the stage's seed."""
    from azr.engine.api import GenerationRequest

    [prompts_file] = stage.reads
    frame = _read(res, step, prompts_file)
    return frame, GenerationRequest(tuple(frame["prompt"].tolist()), _sampling(res, step, stage.name))


def rollout_version(step: int, async_level: int = 0) -> int:
    """The policy version that samples iteration `step`'s propose and solve batches: the
    weights after update step-1 (0: the initial weights); one-step-off (`async_level` 1), the
    weights before update step-1, those after update step-2 (docs/algorithm.md §14.4)."""
    return max(0, step - 1 - async_level)


def _answer_rows(res: RunContext, step: int, frame: pd.DataFrame, completions: list) -> list[dict]:
    """The generation rows of a prompts file from its one completion per prompt."""
    keys = [{"step": step, "group": g, "task_type": t, "index": int(i)}
            for g, t, i in zip(frame["group"], frame["task_type"], frame["index"])]
    version = rollout_version(step, res.config.rollout.async_level)
    return _generation_rows(keys, frame["prompt"].tolist(), [c[0] for c in completions], version)


def _generate(res: RunContext, requests: list, generator: Any = None) -> list:
    """The completions of each request: one engine call for all (`rollout.merge_calls`), else
    one call per request. Either way a request gets the same samples (its seeds are keyed by
    its own prompts' indices, `azr.engine.api.GenerationRequest`). `generator`: who samples
    (the policy unless given)."""
    generator = res.policy if generator is None else generator
    if not requests:
        return []
    if res.config.rollout.merge_calls:
        return generator.generate_many(requests)
    return [generator.generate_many([request])[0] for request in requests]


# ------------------------------------------------------------------------------ the stages


def build_prompts(res: RunContext, step: int) -> None:
    """Propose and solve prompts of the iteration, from the buffers as they stand.

    Always computed (it is cheap and advances the buffers' random state exactly as the first
    attempt did); written only if missing, so a resumed iteration keeps its prompts.
    """
    prompts = build_iteration_prompts(res.buffers, step, res.config, res.wrapper, res.count_tokens)
    for name, records in ((StageFile.PROPOSE_PROMPTS, prompts.propose), (StageFile.SOLVE_PROMPTS, prompts.solve)):
        path = res.run.stage_path(step, name)
        if not path.exists():
            write_parquet_atomic(prompts_table(step, records), path)


def propose(res: RunContext, step: int) -> None:
    """One sampled proposer response per propose prompt, with the pre-update policy."""
    frame, request = _answer_request(res, step, PROPOSE)
    [completions] = _generate(res, [request], res.generator)
    _write(res, step, *_answers(res, step, PROPOSE, frame, completions))


def _source_program(references: Any) -> Triplet:
    """The program an induction proposer was shown (the prompt's single reference)."""
    reference = list(references)[0]
    return Triplet(reference["program"], reference["input"], reference["output"], collect_imports(reference["program"]))


def _validated_row(key: dict, outcome: ProposalOutcome) -> dict:
    task, validation = outcome.task, outcome.validation
    row = {**key, "format_ok": outcome.format_ok, "valid": task is not None, "reason": outcome.label,
           "detail": validation.detail[:2000], "program": None, "input": None, "output": None,
           "inputs": None, "outputs": None, "message": None, "imports": None}
    if isinstance(task, Triplet):
        row.update(program=task.program, input=task.input, output=task.output, imports=list(task.imports))
    elif isinstance(task, InductionTask):
        row.update(program=task.program, inputs=list(task.inputs), outputs=list(task.outputs),
                   message=task.message, imports=list(task.imports))
    return row


def validate(res: RunContext, step: int) -> None:
    """Parse every proposal and validate it in the sandbox, one executor batch per type."""
    proposals = _read(res, step, StageFile.PROPOSALS)
    prompts = _read(res, step, StageFile.PROPOSE_PROMPTS).set_index("index", drop=False)
    rows: list[dict] = []
    for task_type in (t for t in TaskType if t.value in set(proposals["task_type"])):
        part = proposals[proposals["task_type"] == task_type.value]
        sources = None
        if task_type is TaskType.INDUCTION:
            group_prompts = prompts[prompts["group"] == Group(task_type, Role.PROPOSE).name]
            sources = [_source_program(group_prompts.loc[int(i), "references"]) for i in part["index"]]
        outcomes = check_proposals(task_type, part["response"].tolist(), res.config, res.executor, sources=sources)
        for (_, proposal), outcome in zip(part.iterrows(), outcomes):
            key = {"step": step, "group": proposal["group"], "task_type": task_type.value, "index": int(proposal["index"])}
            rows.append(_validated_row(key, outcome))
    _write(res, step, StageFile.VALIDATED, rows, VALIDATED_SCHEMA)


def task_from_row(task_type: TaskType, row: Any) -> Triplet | InductionTask:
    """The buffer record a validated (or solve prompt) row describes."""
    imports = tuple(row["imports"]) if "imports" in row and row["imports"] is not None else ()
    if task_type is TaskType.INDUCTION:
        return InductionTask(row["program"], tuple(row["inputs"]), tuple(row["outputs"]), row["message"], imports or collect_imports(row["program"]))
    return Triplet(row["program"], row["input"], row["output"], imports or collect_imports(row["program"]))


def mc_rollouts(res: RunContext, step: int) -> None:
    """n sampled solves of each valid proposal with the pre-update policy: its solve rate. The
    task types' rollouts are one engine call (`rollout.merge_calls`), each with its own seed.

    A task whose solve prompt is over the length limit gets solve rate 0 and stays out of the
    buffer (docs/algorithm.md §7.2, step 4).
    """
    from azr.engine.api import GenerationRequest

    validated = _read(res, step, StageFile.VALIDATED)
    valid = validated[validated["valid"]]
    limit = mc_prompt_limit(res.config.rollout)
    parts: list[tuple[TaskType, list, list[dict], list[dict], Any]] = []  # type, tasks, keys, too long, request
    for task_type in (t for t in TaskType if t.value in set(valid["task_type"])):
        part = valid[valid["task_type"] == task_type.value]
        tasks, prompts, keys, too_long = [], [], [], []
        for _, row in part.iterrows():
            task = task_from_row(task_type, row)
            prompt = res.wrapper.wrap(solve_prompt_for(task_type, task, res.config.tasks.prompt_profile))
            key = {"step": step, "group": row["group"], "task_type": task_type.value, "index": int(row["index"])}
            tokens = res.count_tokens(prompt)
            if tokens > limit:
                too_long.append({**key, "sample": 0, "prompt_tokens": tokens, "response": "", "response_tokens": 0,
                                 "solve_rate": 0.0, "in_buffer": False})
                continue
            tasks.append(task)
            prompts.append(prompt)
            keys.append({**key, "prompt_tokens": tokens})
        settings = _sampling(res, step, f"{MC_ROLLOUTS.name}:{task_type.value}", monte_carlo=True)
        parts.append((task_type, tasks, keys, too_long, GenerationRequest(tuple(prompts), settings)))
    results = iter(_generate(res, [request for *_, request in parts if request.prompts]))
    rows: list[dict] = []
    for task_type, tasks, keys, too_long, request in parts:
        rows += too_long
        if not request.prompts:
            continue
        samples = next(results)
        texts = [[c.text for c in completions] for completions in samples]
        estimates = estimate_learnability(task_type, tasks, texts, res.executor, res.config.reward, res.wrapper.response_prefix)
        for key, completions, estimate in zip(keys, samples, estimates):
            for number, completion in enumerate(completions):
                rows.append({**key, "sample": number, "response": completion.text, "response_tokens": len(completion.token_ids),
                             "solve_rate": estimate.solve_rate, "in_buffer": True})
    _write(res, step, StageFile.MC_ROLLOUTS, rows, MC_ROLLOUTS_SCHEMA)


def solve(res: RunContext, step: int) -> None:
    """One sampled solver response per solve prompt, scored by the executor."""
    frame, request = _answer_request(res, step, SOLVE)
    [completions] = _generate(res, [request], res.generator)
    _write(res, step, *_answers(res, step, SOLVE, frame, completions))


def _answers(res: RunContext, step: int, stage: Stage, frame: pd.DataFrame,
             completions: list) -> tuple[StageFile, list[dict], pa.Schema]:
    """The file of a generation stage (propose or solve), its rows and its schema; the solver's
    answers are scored by the executor."""
    rows = _answer_rows(res, step, frame, completions)
    if stage is SOLVE:
        rows = _scored_solutions(res, frame, rows)
    [(file, schema)] = stage.writes.items()
    return file, rows, schema


def _scored_solutions(res: RunContext, frame: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """The solve rows with the executor's verdict on each answer."""
    for task_type in (t for t in TaskType if t.value in set(frame["task_type"])):
        positions = [p for p, row in enumerate(rows) if row["task_type"] == task_type.value]
        tasks = [task_from_row(task_type, frame.iloc[p]) for p in positions]
        outcomes = score_solutions(task_type, tasks, [rows[p]["response"] for p in positions], res.executor,
                                   res.config.reward, res.wrapper.response_prefix)
        for p, outcome in zip(positions, outcomes):
            rows[p].update(format_ok=outcome.format_ok, answer=outcome.answer, accuracy=outcome.accuracy,
                           reward=outcome.reward, reason=outcome.reason.value if outcome.reason else "")
    return rows


def generate_propose_solve(res: RunContext, step: int) -> None:
    """The propose and the solve batch in one engine call (`rollout.merge_calls`).

    The one-step lag makes this possible: the solve prompts come from the buffers as they
    stood before this iteration's proposals, so they are known before proposing. Both use the
    pre-update policy and the seeds of their own stages, so the files are those of `propose`
    and `solve`. proposals.parquet and solutions.parquet are written together, all or none;
    if a resumed iteration has only proposals.parquet, only the solve batch is generated.
    """
    parts = [part for part in parts_of(GENERATE_PROPOSE_SOLVE) if not stage_complete(res.run, step, part)]
    answers = [_answer_request(res, step, part) for part in parts]
    results = _generate(res, [request for _, request in answers], res.generator)
    outputs = [_answers(res, step, part, frame, completions) for part, (frame, _), completions in zip(parts, answers, results)]
    _write_together(res, step, outputs)


SAFETY_SOURCES = (("proposals", StageFile.PROPOSALS), ("mc_rollouts", StageFile.MC_ROLLOUTS), ("solutions", StageFile.SOLUTIONS))
"""The responses the safety stage scans: the `source` of safety.parquet's rows and their file."""


def safety(res: RunContext, step: int) -> None:
    """Scan the reasoning of every response of the iteration (proposals, Monte-Carlo solves,
    solutions) with the safety rules, optionally ask the judge, and keep the flagged ones.

    safety.json holds the counts (scanned, flagged, per rule); safety.parquet, written last,
    the flagged responses with what matched.
    """
    from azr.ops.safety.rules import RULE_NAMES, reasoning_of, scan_reasoning

    rows: list[dict] = []
    candidates: list[tuple[dict, bool]] = []
    scanned = 0
    settings = res.config.safety
    for source, file in SAFETY_SOURCES:
        frame = _read(res, step, file)
        for record in frame.to_dict("records"):
            scanned += 1
            reasoning = reasoning_of(record["response"], "")
            found = scan_reasoning(reasoning) if settings.enabled else None
            flagged = bool(found and found.flagged)
            row = {"step": step, "group": record["group"], "task_type": record["task_type"], "index": int(record["index"]),
                   "source": source, "sample": int(record.get("sample", 0) or 0),
                   "rules": list(found.rules) if found else [], "matches": [m.text for m in found.matches] if found else [],
                   "judge": None, "reasoning": reasoning[:4000], "response": record["response"][:8000]}
            if flagged or settings.judge == "all":
                candidates.append((row, flagged))
    if settings.judge != "off" and candidates:
        from azr.ops.safety.judge import judge_reasoning

        verdicts = judge_reasoning(res.policy, res.wrapper.wrap, [row["reasoning"] for row, _ in candidates],
                                   settings.judge_max_new_tokens)
        for (row, _), verdict in zip(candidates, verdicts):
            row["judge"] = verdict
    rows = [row for row, flagged in candidates if flagged or row["judge"]]
    by_rule = {name: sum(name in row["rules"] for row in rows) for name in RULE_NAMES}
    atomic_write_json(res.run.stage_path(step, StageFile.SAFETY_COUNTS),
                      {"scanned": scanned, "flagged": len(rows), "by_rule": by_rule, "judge": settings.judge,
                       "judge_flagged": sum(bool(row["judge"]) for row in rows)})
    _write(res, step, StageFile.SAFETY, rows, SAFETY_SCHEMA)


def safety_penalties(res: RunContext, step: int) -> dict[tuple[str, str, int], float]:
    """(source, group, index) -> the penalty of a flagged trained response; empty unless
    `safety.penalty` asks for one (rewards are never changed by default)."""
    penalty = res.config.safety.penalty
    path = res.run.stage_path(step, StageFile.SAFETY)
    if penalty <= 0 or not path.exists():
        return {}
    flagged = pd.read_parquet(path)
    return {(s, g, int(i)): penalty for s, g, i in zip(flagged["source"], flagged["group"], flagged["index"])
            if s in ("proposals", "solutions")}


def rewards(res: RunContext, step: int) -> None:
    """Proposer rewards from validity, format and solve rate; solver rewards as scored; TRR++
    advantages within each of the six groups over the trained sequences."""
    proposals = _read(res, step, StageFile.PROPOSALS)
    validated = _read(res, step, StageFile.VALIDATED).set_index(["group", "index"])
    rollouts = _read(res, step, StageFile.MC_ROLLOUTS)
    solve_rates = rollouts.groupby(["group", "index"])["solve_rate"].first().to_dict()
    solutions = _read(res, step, StageFile.SOLUTIONS)
    penalties = safety_penalties(res, step)
    rows: list[dict] = []
    for _, proposal in proposals.iterrows():
        verdict = validated.loc[(proposal["group"], proposal["index"])]
        solve_rate = solve_rates.get((proposal["group"], proposal["index"]), 0.0)
        reward = proposer_reward(bool(verdict["valid"]), bool(verdict["format_ok"]), solve_rate, res.config.reward)
        reward -= penalties.get(("proposals", proposal["group"], int(proposal["index"])), 0.0)
        rows.append(_scored_row(step, proposal, Role.PROPOSE, reward, res.config.trainer.train_propose))
    for _, solution in solutions.iterrows():
        reward = float(solution["reward"]) - penalties.get(("solutions", solution["group"], int(solution["index"])), 0.0)
        rows.append(_scored_row(step, solution, Role.SOLVE, reward, True))
    advantages = trained_advantages([r["group"] for r in rows], [r["reward"] for r in rows],
                                    [r["response_tokens"] for r in rows], [r["trained"] for r in rows],
                                    res.config.trainer.advantage_eps)
    for row, advantage in zip(rows, advantages):
        row["advantage"] = advantage
    _write(res, step, StageFile.SCORED, rows, SCORED_SCHEMA)


def _scored_row(step: int, row: Any, role: Role, reward: float, trained: bool) -> dict:
    behaviour, version = row.get("behaviour_logprobs"), row.get("policy_version")
    return {"step": step, "group": row["group"], "task_type": row["task_type"], "index": int(row["index"]),
            "role": role.value, "prompt_token_ids": list(row["prompt_token_ids"]),
            "response_token_ids": list(row["response_token_ids"]), "response_tokens": int(row["response_tokens"]),
            "reward": float(reward), "advantage": 0.0, "trained": trained and int(row["response_tokens"]) > 0,
            "behaviour_logprobs": None if behaviour is None else [float(x) for x in behaviour],
            "policy_version": None if version is None or pd.isna(version) else int(version)}


def has_trained_rows(scored: pd.DataFrame) -> bool:
    return bool(len(scored)) and bool(scored["trained"].any())


def engine_layout(policy: PolicyHandle) -> dict[str, Any]:
    """`world_size` and `strategy` of the engine that trains (recorded in update.json)."""
    return {"world_size": int(policy.world_size), "strategy": str(policy.strategy)}


def policy_lag(scored: pd.DataFrame, step: int) -> dict[str, float]:
    """How many versions the trained rows' sampling policy is behind the weights update `step`
    starts from (those after update step-1); empty for rows of unknown version."""
    if "policy_version" not in scored:
        return {}
    versions = scored.loc[scored["trained"], "policy_version"].dropna()
    if versions.empty:
        return {}
    lags = (step - 1) - versions.astype(int)
    return {"policy_lag": float(lags.mean()), "policy_lag_max": float(lags.max())}


def train_on_scored(policy: PolicyHandle, scored: Path, step: int) -> dict[str, Any]:
    """The update of iteration `step` on its scored.parquet, and its update.json record (with the
    policy lag); the update stage and resume's replay both train through here, so a replayed
    update writes the same record."""
    table = pd.read_parquet(scored)
    if not has_trained_rows(table):
        return {"skipped": True, "sequences": 0, "tokens": 0, **engine_layout(policy)}
    metrics = policy.update_scored(scored)
    metrics["off_policy"] = {**metrics.get("off_policy", {}), **policy_lag(table, step)}
    return metrics


def checkpoint_due(config: Any, step: int, last_step: int) -> bool:
    return step % config.trainer.checkpoint_every == 0 or step == last_step


def update(res: RunContext, step: int) -> None:
    """One TRR++ optimizer step on the iteration's sequences; a checkpoint when due.

    update.json is written last: it is the stage's completion marker. If the process dies
    after a checkpoint of this step but before update.json, resuming restores update.json
    from the checkpoint (the update is never applied twice).
    """
    metrics = train_on_scored(res.policy, res.run.stage_path(step, StageFile.SCORED), step)
    last_step = res.last_step
    # one-step-off, the servers are still generating the next iteration: sync_rollout does it after
    if step < last_step and res.config.rollout.async_level == 0:  # after the last update, only an evaluation would need it
        seconds = res.policy.sync_rollout_weights()
        if seconds is not None:
            metrics["weight_sync_s"] = seconds
    if checkpoint_due(res.config, step, last_step):
        warn_before_checkpoint(res.run.checkpoint_dir)
        path = res.policy.save_checkpoint(res.run.checkpoint_dir, step, metadata={"update": metrics})
        res.emit("checkpoint", step=step, path=str(path))
    atomic_write_json(res.run.stage_path(step, StageFile.UPDATE), metrics)


def commit(res: RunContext, step: int) -> None:
    """Append the iteration's valid tasks to the buffer log (once; the log refuses twice)."""
    if step not in committed_steps(res.run.buffer_dir):
        commit_step(res.buffers, res.run.buffer_dir, step, buffer_entries(res.run, step))
    sizes = {t.value: len(res.buffers[t]) for t in TaskType}
    atomic_write_json(res.run.stage_path(step, StageFile.COMMITTED), {"step": step, "buffer_sizes": sizes})


def buffer_entries(run: RunDir, step: int) -> dict[TaskType, list]:
    """The tasks an iteration adds to the buffers: its valid proposals, less those whose solve
    prompt was too long (also what a rebuilt buffer log replays, run_state.py)."""
    validated = pd.read_parquet(run.stage_path(step, StageFile.VALIDATED))
    rollouts = pd.read_parquet(run.stage_path(step, StageFile.MC_ROLLOUTS))
    excluded = set(map(tuple, rollouts.loc[~rollouts["in_buffer"], ["group", "index"]].values.tolist()))
    entries: dict[TaskType, list] = {t: [] for t in TaskType}
    for _, row in validated[validated["valid"]].iterrows():
        if (row["group"], row["index"]) not in excluded:
            task_type = TaskType(row["task_type"])
            entries[task_type].append(task_from_row(task_type, row))
    return entries


# ------------------------------------------------------------------------------ running them


def stage_done(res: RunContext, step: int, stage: Stage) -> bool:
    """Whether resuming skips `stage` at `step`: the files of every stage whose work it does
    pass their resume check (registry.ResumeCheck; each is checked, so damaged files are all set
    aside), and it is not a stage that always runs (prompt building)."""
    complete = [stage_complete(res.run, step, part) for part in parts_of(stage)]
    return all(complete) and not stage.always_runs


def stage_outputs(run: RunDir, step: int, stage: Stage) -> list[Path]:
    """The paths of the files `stage` writes at `step`."""
    return [run.stage_path(step, name) for part in parts_of(stage) for name in part.files]


def run_stage(res: RunContext, step: int, stage: Stage) -> list[Path]:
    """Run `stage` unless resuming skips it (`stage_done`), recording how long it took;
    the paths of its files either way."""
    if not stage_done(res, step, stage):
        res.emit("stage_started", step=step, stage=stage.name)
        started = time.perf_counter()
        stage.function(res, step)
        res.run.record_timing(step, stage.name, time.perf_counter() - started)
        res.emit("stage_finished", step=step, stage=stage.name)
    return stage_outputs(res.run, step, stage)


StageRun = tuple[str, Callable[[RunContext, int], list[Path]]]


def iteration_stages(config: Any) -> tuple[StageRun, ...]:
    """The stages of an iteration, in order, as `rollout.merge_calls` says: (name, run) pairs."""
    return tuple((stage.name, partial(run_stage, stage=stage)) for stage in stages_for(config.rollout.merge_calls))


STAGE_FUNCTIONS: tuple[StageRun, ...] = tuple(
    (stage.name, partial(run_stage, stage=stage)) for stage in stages_for(merge_calls=False))
"""The stages of the separate-calls layout (one engine call per batch)."""


def run_iteration(res: RunContext, step: int) -> None:
    """All stages of one iteration, called directly (no Prefect): for tests and benchmarks.

    One-step-off (`rollout.async_level: 1`): prompts, then this iteration's generation beside
    the previous iteration's update (two threads), the weight sync once both are done, then
    the rest up to the commit; this iteration's update waits for the next one
    (`finish_updates` after the last)."""
    if res.config.rollout.async_level == 0:
        for stage in stages_for(res.config.rollout.merge_calls):
            run_stage(res, step, stage)
        return
    before, generation, after = overlap_phases(res.config.rollout.merge_calls)
    for stage in before:
        run_stage(res, step, stage)
    pending = pending_update(res, step)
    # the servers must hold the weights the trainer holds now, before its update: a no-op but
    # after a resume (the servers start from the weights exported before the checkpoint loaded)
    res.policy.sync_rollout_weights()
    with ThreadPoolExecutor(max_workers=2 if res.overlaps else 1, thread_name_prefix="azr-overlap") as pool:
        jobs = [pool.submit(lambda: [run_stage(res, step, stage) for stage in generation])]
        if pending is not None:
            jobs.append(pool.submit(run_stage, res, pending, UPDATE))
        for job in jobs:
            job.result()
    if pending is not None:
        sync_rollout(res, pending)
    for stage in after:
        run_stage(res, step, stage)


def pending_update(res: RunContext, step: int) -> int | None:
    """One-step-off: the update that runs beside iteration `step`'s generation (that of step-1,
    unless it is done); None in the sync order."""
    if res.config.rollout.async_level == 0 or step <= 1 or update_done(res.run, step - 1):
        return None
    return step - 1


def update_done(run: RunDir, step: int) -> bool:
    """Whether iteration `step`'s update has run (its record exists)."""
    return stage_complete(run, step, UPDATE)


def sync_rollout(res: RunContext, step: int) -> None:
    """The weights of update `step` into the rollout servers, once the generation that used the
    old ones is done (one-step-off); its seconds go to iteration `step`'s timings.json."""
    started = time.perf_counter()
    seconds = res.policy.sync_rollout_weights()
    if seconds is not None:
        res.run.record_timing(step, "weight_sync", time.perf_counter() - started)


def finish_updates(res: RunContext, last: int) -> None:
    """One-step-off: the last iteration's update, left by its iteration (no generation follows)."""
    if res.config.rollout.async_level and last >= 1 and not update_done(res.run, last):
        run_stage(res, last, UPDATE)


def advantages_by_group(scored: pd.DataFrame) -> dict[str, float]:
    """Token-weighted mean advantage of each group's trained rows (zero after whitening)."""
    trained = scored[scored["trained"]]
    result = {}
    for group, part in trained.groupby("group"):
        weights = part["response_tokens"].to_numpy(dtype=float)
        result[str(group)] = float(np.average(part["advantage"], weights=weights)) if weights.sum() else 0.0
    return result
