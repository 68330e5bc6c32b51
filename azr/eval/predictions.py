"""Reading predictions made by any system: JSONL lines {"id", "prediction"}.

HumanEval's own sample format ({"task_id", "completion"}), EvalPlus' ({"task_id", "solution"})
and whole model responses ({"id", "response"}) are accepted too; ids are matched as the benchmark
files give them (azr/eval/benchmarks/ids.py). Nothing here is
fatal except an unreadable file: malformed lines, ids the benchmark does not have, ids given
twice (the first line counts) and problems with no prediction are all reported with the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from azr.pipeline.atomic_io import PathLike
from azr.eval.benchmarks.jsonl import BadLine, read_jsonl

_ID_KEYS = ("id", "task_id")
_PREDICTION_KEYS = ("prediction", "completion", "solution", "response")


@dataclass
class PredictionReport:
    predictions: dict[str, str] = field(default_factory=dict)  # id -> prediction, benchmark ids only
    missing: list[str] = field(default_factory=list)  # benchmark ids with no prediction
    extra: list[str] = field(default_factory=list)  # ids that are not in the benchmark
    duplicates: list[str] = field(default_factory=list)  # ids given more than once
    malformed: list[BadLine] = field(default_factory=list)

    def for_problems(self, ids: Sequence[str]) -> list[str | None]:
        """The prediction of each id in order, None where there is none."""
        return [self.predictions.get(i) for i in ids]


def _first(row: dict[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    for key in keys:
        if key in row:
            return key, row[key]
    return None, None


def _id_of(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_predictions(path: PathLike, problem_ids: Sequence[str]) -> PredictionReport:
    """Match a prediction file against the benchmark's ids (raises EvalDataError only when the
    file itself cannot be read)."""
    content = read_jsonl(path)
    report = PredictionReport(malformed=list(content.bad))
    known = set(problem_ids)
    seen: set[str] = set()
    for line in content.rows:
        id_key, raw_id = _first(line.row, _ID_KEYS)
        prediction_key, prediction = _first(line.row, _PREDICTION_KEYS)
        row_id = _id_of(raw_id)
        if row_id is None:
            reason = "no id" if id_key is None else f"{id_key} must be a non-empty string or an integer"
            report.malformed.append(BadLine(line.number, reason))
            continue
        if not isinstance(prediction, str):
            reason = "no prediction" if prediction_key is None else f"{prediction_key} must be a string"
            report.malformed.append(BadLine(line.number, f"{reason} (id {row_id!r})"))
            continue
        if row_id in seen:
            report.duplicates.append(row_id)
            continue
        seen.add(row_id)
        if row_id not in known:
            report.extra.append(row_id)
            continue
        report.predictions[row_id] = prediction
    report.malformed.sort(key=lambda bad: bad.number)
    report.missing = [i for i in problem_ids if i not in report.predictions]
    return report
