"""The published benchmark files with their quirks (tests/fixtures/eval/*_quirks.jsonl): a row
EvalPlus itself reads is read the same way (MBPP+ v0.2.0's `Mbpp/793`, whose `plus_input` is
`{}`: no extra tests); a row that truly cannot be used is skipped with a warning naming it and
scored as a failure; a file is refused only when none of its rows can be used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from azr.eval.benchmarks.problems import EvalDataError, LoadedProblems, PlusProblem
from azr.eval.benchmarks.registry import get_benchmark
from flows.entry import app

FIXTURES = Path(__file__).parents[1] / "fixtures" / "eval"
MBPP_QUIRKS = FIXTURES / "mbpp_plus_quirks.jsonl"


def test_an_empty_plus_input_object_means_no_extra_tests() -> None:
    problems = get_benchmark("mbpp-plus").load(str(MBPP_QUIRKS))
    assert isinstance(problems, LoadedProblems)
    by_id = {p.id: p for p in problems}
    assert set(by_id) == {"Mbpp/2", "Mbpp/793"}
    last = by_id["Mbpp/793"]
    assert isinstance(last, PlusProblem) and json.loads(last.plus_input) == [] and len(json.loads(last.base_input)) == 3
    (skipped,) = problems.skipped
    assert skipped.id == "Mbpp/9001" and "line 3" in skipped.where and "canonical_solution" in skipped.reason


def test_a_limit_keeps_only_the_skipped_rows_before_it() -> None:
    assert get_benchmark("mbpp-plus").load(str(MBPP_QUIRKS), limit=1).skipped == ()
    assert len(get_benchmark("mbpp-plus").load(str(MBPP_QUIRKS), limit=2).skipped) == 1  # the whole file


def test_a_file_without_one_usable_row_is_refused_naming_the_rows(tmp_path: Path) -> None:
    bad = tmp_path / "MbppPlus.jsonl"
    bad.write_text(MBPP_QUIRKS.read_text(encoding="utf-8").splitlines()[2] + "\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"no usable row: MbppPlus.jsonl line 1: .*canonical_solution"):
        get_benchmark("mbpp-plus").load(str(bad))


def test_canonical_solutions_score_every_usable_row_and_the_unusable_one_fails(tmp_path: Path) -> None:
    """`azr eval score` with the canonical solutions as predictions: 2 of 3 (the damaged row is
    in the denominator, named in a warning and in results.jsonl)."""
    rows = [json.loads(line) for line in MBPP_QUIRKS.read_text(encoding="utf-8").splitlines()]
    predictions = tmp_path / "canonical.jsonl"
    predictions.write_text("".join(json.dumps({"id": r["task_id"], "prediction": r["canonical_solution"] or ""}) + "\n"
                                   for r in rows[:2]), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "score", "-b", "mbpp-plus", "--data", str(MBPP_QUIRKS), "--predictions",
                                      str(predictions), "--preset", "tiny", "--out", str(tmp_path / "out")],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert "skipped mbpp_plus_quirks.jsonl line 3 (id 'Mbpp/9001')" in warning and "counts as a failure" in warning
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["problems"] == 3 and summary["correct"] == 2
    results = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert results["Mbpp/793"]["correct"] and results["Mbpp/2"]["correct"]
    assert results["Mbpp/9001"]["status"] == "unusable_row" and not results["Mbpp/9001"]["correct"]
