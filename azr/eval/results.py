"""The per-problem result files of an evaluation and the numbers made from them.

`results.parquet` (schema `azr.pipeline.schemas.EVAL_RESULTS_SCHEMA`) has one verdict per problem and is
what every number is computed from; `results.jsonl` is the same rows for tools without Parquet.
Metric names are `eval/<benchmark key>/<name>`, the same in a standalone evaluation and in
training, so runs and checkpoints compare in MLflow.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from azr.pipeline.atomic_io import atomic_write_text, write_parquet_atomic
from azr.eval.scoring.stats import Accuracy, accuracy_of
from azr.pipeline.schemas import EVAL_RESULTS_SCHEMA

RESULTS_FILE = "results.parquet"
RESULTS_JSONL = "results.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ResultRow:
    benchmark: str
    id: str
    prompt: str | None
    response: str | None
    prediction: str | None
    scored_prediction: str
    correct: bool
    status: str
    error: str
    format_ok: bool | None = None
    finish_reason: str | None = None
    response_tokens: int | None = None
    sample: int = 0
    base_correct: bool | None = None


def results_table(rows: Sequence[ResultRow]) -> pa.Table:
    columns = {name: [getattr(row, name) for row in rows] for name in EVAL_RESULTS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=EVAL_RESULTS_SCHEMA)


def write_results(rows: Sequence[ResultRow], out_dir: Path, *, stem: str = "results", jsonl: bool = True) -> Path:
    """`<stem>.parquet` (and `<stem>.jsonl`) in `out_dir`, each written atomically."""
    path = out_dir / f"{stem}.parquet"
    write_parquet_atomic(results_table(rows), path)
    if jsonl:
        text = "".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows)
        atomic_write_text(out_dir / f"{stem}.jsonl", text)
    return path


def read_results(path: Path) -> list[ResultRow]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, schema=EVAL_RESULTS_SCHEMA)
    return [ResultRow(**row) for row in table.to_pylist()]


def accuracy_of_rows(rows: Sequence[ResultRow]) -> Accuracy:
    return accuracy_of([row.correct for row in rows])


def summarise(rows: Sequence[ResultRow]) -> dict[str, Any]:
    """Accuracy with its interval, statuses, format rate and response lengths.

    With one row per problem, accuracy is pass@1. With n samples per problem, accuracy is the
    unbiased pass@1 (the mean correct fraction), `pass_at_k` holds pass@k for k = 1, 2, 4 ... n,
    and the interval is over all samples. `base_accuracy` is the EvalPlus base-tests-only
    (LiveCodeBench public-tests-only) figure where the benchmark has one.
    """
    from azr.eval.scoring.passk import ks_for, mean_pass_at_k

    accuracy = accuracy_of_rows(rows)
    formats = [row.format_ok for row in rows if row.format_ok is not None]
    lengths = [row.response_tokens for row in rows if row.response_tokens is not None]
    clipped = [row.finish_reason == "length" for row in rows if row.finish_reason is not None]
    per_problem: dict[str, list[bool]] = {}
    for row in rows:
        per_problem.setdefault(row.id, []).append(row.correct)
    counts = [(len(flags), sum(flags)) for flags in per_problem.values()]
    samples = min((n for n, _ in counts), default=1)
    base = [row.base_correct for row in rows if row.base_correct is not None]
    summary: dict[str, Any] = {
        "problems": len(per_problem) if samples > 1 else accuracy.total,
        "correct": accuracy.correct,
        "accuracy": mean_pass_at_k(counts, 1) if samples > 1 else accuracy.accuracy,
        "ci95_low": accuracy.ci_low,
        "ci95_high": accuracy.ci_high,
        "samples": samples,
        "statuses": dict(sorted(Counter(row.status for row in rows).items())),
        "format_rate": sum(formats) / len(formats) if formats else None,
        "response_tokens_mean": sum(lengths) / len(lengths) if lengths else None,
        "clip_ratio": sum(clipped) / len(clipped) if clipped else None,
        "base_accuracy": sum(base) / len(base) if base else None,
    }
    if samples > 1:
        summary["pass_at_k"] = {str(k): mean_pass_at_k(counts, k) for k in ks_for(samples)}
    return summary


def metrics_from_summary(key: str, summary: dict[str, Any]) -> dict[str, float]:
    """`eval/<key>/...` floats for MLflow; missing values are left out."""
    names = ("accuracy", "ci95_low", "ci95_high", "problems", "correct", "format_rate", "response_tokens_mean",
             "clip_ratio", "base_accuracy")
    metrics = {f"eval/{key}/{name}": float(summary[name]) for name in names if summary.get(name) is not None}
    for k, value in (summary.get("pass_at_k") or {}).items():
        metrics[f"eval/{key}/pass_at_{k}"] = float(value)
    return metrics


def write_summary(summary: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / SUMMARY_FILE
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path
