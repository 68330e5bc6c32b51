"""The numbers of one iteration, read back from its stage files (docs/algorithm.md §11.4).

Keys are `group/name` for the six groups, `overall/name`, `buffer/...`, `time/...` and
`update/...`; values are floats, ready for one batched MLflow call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from azr.selfplay.curriculum import distinct_ratio, program_metrics, type_metrics
from azr.pipeline.registry import StageFile
from azr.pipeline.run_dir import RunDir
from azr.selfplay.task_types import GROUP_NAMES

SOLVE_RATE_BUCKETS = ("0", "0-25", "25-50", "50-75", "75-100", "1")


def solve_rate_bucket(rate: float) -> str:
    """Where a proposal's solve rate falls: never / sometimes (by quarter) / always."""
    if rate <= 0.0:
        return "0"
    if rate >= 1.0:
        return "1"
    return SOLVE_RATE_BUCKETS[1 + min(3, int(rate * 4 - 1e-12))]


def _stats(prefix: str, values: pd.Series) -> dict[str, float]:
    array = values.to_numpy(dtype=float)
    if array.size == 0:
        return {}
    return {f"{prefix}_mean": float(array.mean()), f"{prefix}_std": float(array.std()),
            f"{prefix}_min": float(array.min()), f"{prefix}_max": float(array.max())}


def _bucket_counts(rates: pd.Series) -> dict[str, float]:
    counts = dict.fromkeys(SOLVE_RATE_BUCKETS, 0.0)
    for rate in rates.to_numpy(dtype=float):
        counts[solve_rate_bucket(rate)] += 1
    return {f"solve_rate_bucket/{name}": value for name, value in counts.items()}


def _generation_stats(frame: pd.DataFrame) -> dict[str, float]:
    metrics = _stats("response_tokens", frame["response_tokens"])
    metrics["clip_ratio"] = float((frame["finish_reason"] == "length").mean()) if len(frame) else 0.0
    return metrics


def propose_metrics(group: str, proposals: pd.DataFrame, validated: pd.DataFrame, rollouts: pd.DataFrame) -> dict[str, float]:
    if proposals.empty:
        return {}
    metrics = {"count": float(len(proposals)), **_generation_stats(proposals)}
    metrics["valid_rate"] = float(validated["valid"].mean())
    metrics["format_rate"] = float(validated["format_ok"].mean())
    reasons = validated.loc[validated["reason"] != "", "reason"].str.split(":").str[0]
    for reason, count in reasons.value_counts().items():
        metrics[f"reason/{reason}"] = float(count)
    valid = validated[validated["valid"]]
    rates = rollouts.groupby("index")["solve_rate"].first()
    learnability = rates.map(lambda r: 1.0 - r if 0.0 < r < 1.0 else 0.0)
    metrics["learnability_mean"] = float(learnability.sum() / len(proposals))  # invalid count as 0
    if len(rates):
        metrics["solve_rate_mean"] = float(rates.mean())
        metrics.update(_bucket_counts(rates))
    if len(valid):
        metrics.update(program_metrics(valid["program"].tolist()))
        if valid["input"].notna().any():
            metrics["input_distinct_ratio"] = distinct_ratio(valid["input"].dropna().tolist())
            metrics["output_distinct_ratio"] = distinct_ratio(valid["output"].dropna().tolist())
            metrics.update(type_metrics(valid["output"].dropna().tolist(), "output_"))
        else:
            outputs = [o for row in valid["outputs"].dropna() for o in row]
            metrics["output_distinct_ratio"] = distinct_ratio(outputs)
    return metrics


def solve_metrics(solutions: pd.DataFrame) -> dict[str, float]:
    if solutions.empty:
        return {}
    accuracy = solutions["accuracy"]
    return {"count": float(len(solutions)), **_generation_stats(solutions),
            "format_rate": float(solutions["format_ok"].mean()),
            "accuracy": float(accuracy.fillna(0.0).mean()),
            "none_ratio": float(accuracy.isna().mean())}


def iteration_metrics(run: RunDir, step: int) -> dict[str, float]:
    """Every metric of a finished iteration."""
    read = lambda name: pd.read_parquet(run.stage_path(step, name))  # noqa: E731
    proposals, validated, rollouts = read(StageFile.PROPOSALS), read(StageFile.VALIDATED), read(StageFile.MC_ROLLOUTS)
    solutions, scored = read(StageFile.SOLUTIONS), read(StageFile.SCORED)
    metrics: dict[str, float] = {}
    for group in GROUP_NAMES:
        if group.endswith("_propose"):
            values = propose_metrics(group, proposals[proposals["group"] == group], validated[validated["group"] == group],
                                     rollouts[rollouts["group"] == group])
        else:
            values = solve_metrics(solutions[solutions["group"] == group])
        group_scored = scored[scored["group"] == group]
        values.update(_stats("reward", group_scored["reward"]))
        trained = group_scored[group_scored["trained"]]
        values.update(_stats("advantage", trained["advantage"]))
        metrics.update({f"{group}/{key}": value for key, value in values.items()})
    metrics.update(_stats("overall/reward", scored["reward"]))
    metrics["overall/sequences"] = float(scored["trained"].sum())
    metrics["overall/response_tokens_mean"] = float(scored["response_tokens"].mean()) if len(scored) else 0.0
    metrics["overall/valid_rate"] = float(validated["valid"].mean()) if len(validated) else 0.0
    metrics["overall/solve_accuracy"] = float(solutions["accuracy"].fillna(0.0).mean()) if len(solutions) else 0.0
    formats = pd.concat([validated["format_ok"], solutions["format_ok"]], ignore_index=True)
    metrics["overall/format_rate"] = float(formats.mean()) if len(formats) else 0.0
    metrics.update(safety_metrics(run.read_json(step, StageFile.SAFETY_COUNTS)))
    metrics.update({f"buffer/{name}_size": float(size) for name, size in run.read_json(step, StageFile.COMMITTED).get("buffer_sizes", {}).items()})
    metrics.update({f"time/{stage}_s": float(seconds) for stage, seconds in run.read_json(step, "timings.json").items()})
    metrics["time/iteration_s"] = float(sum(run.read_json(step, "timings.json").values()))
    metrics.update(_update_metrics(run.read_json(step, StageFile.UPDATE)))
    return {key: value for key, value in metrics.items() if np.isfinite(value)}


def safety_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Count and rate of responses whose reasoning the safety monitor flagged (safety.json)."""
    if not summary:
        return {}
    scanned, flagged = float(summary.get("scanned", 0)), float(summary.get("flagged", 0))
    metrics = {"safety/scanned": scanned, "safety/flagged": flagged, "safety/rate": flagged / scanned if scanned else 0.0,
               "safety/judge_flagged": float(summary.get("judge_flagged", 0))}
    metrics.update({f"safety/rule/{name}": float(count) for name, count in summary.get("by_rule", {}).items()})
    return metrics


def _update_metrics(update: dict[str, Any]) -> dict[str, float]:
    names = ("loss", "pg_loss", "entropy", "kl", "grad_norm", "clip_frac", "tokens", "sequences", "seconds", "tokens_per_second",
             "weight_sync_s", "world_size", "gpu_peak_mb", "gpu_free_mb")
    metrics = {f"update/{name}": float(update[name]) for name in names if isinstance(update.get(name), (int, float))}
    # the off-policy gap (docs/algorithm.md §14): lag, log-prob mismatch, ratio percentiles
    metrics.update({f"off_policy/{name}": float(value) for name, value in (update.get("off_policy") or {}).items()
                    if isinstance(value, (int, float))})
    return metrics


# The per-group summary table's columns (CLI and Prefect artifact), with what each means.
SUMMARY_COLUMNS = {
    "group": "task type and role (deduction_propose, ..., induction_solve)",
    "sequences": "responses generated for the group this iteration",
    "valid proposals": "share of proposals that passed validation (propose groups)",
    "solve accuracy": "share of answers judged correct (solve groups)",
    "well formatted": "share of responses with a parsable think/answer format",
    "learnability": "mean proposer reward from the Monte-Carlo solves, invalid counted as 0 (propose groups)",
    "mean reward": "mean reward of the group's sequences",
    "response tokens": "mean response length, tokens",
}


def summary_rows(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """One row per group under SUMMARY_COLUMNS; None where a measure does not apply to the group."""

    def value(group: str, name: str, digits: int = 3) -> float | None:
        key = f"{group}/{name}"
        return round(metrics[key], digits) if key in metrics else None

    rows = []
    for group in GROUP_NAMES:
        if f"{group}/count" not in metrics:
            continue
        cells = [group, int(metrics[f"{group}/count"]), value(group, "valid_rate"), value(group, "accuracy"),
                 value(group, "format_rate"), value(group, "learnability_mean"), value(group, "reward_mean"),
                 value(group, "response_tokens_mean", 1)]
        rows.append(dict(zip(SUMMARY_COLUMNS, cells, strict=True)))
    return rows
