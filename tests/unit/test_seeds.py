"""Zero data and seed-file loading (docs/algorithm.md §8.2-§8.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from azr.selfplay.task_records import InductionTask, Triplet
from azr.pipeline.schemas import INDUCTION_SCHEMA, TRIPLET_SCHEMA
from azr.selfplay.seed_tasks import (
    IDENTITY_PROGRAM,
    SeedFileError,
    load_induction_seeds,
    load_io_seeds,
    zero_induction_task,
    zero_triplet,
)


def io_row(i: int, **overrides: Any) -> dict[str, Any]:
    """A row in the original `*_seed_io.jsonl` schema."""
    row = {
        # the original's snippets carry their own import lines, also listed in `imports`
        "snippet": ("import math\n" if i % 2 else "") + f"def f(x):\n    return x + {i}",
        "input": str(i),
        "output": str(2 * i),
        "imports": ["import math"] if i % 2 else [],
        "original_snippet": f"def f(x):\n    return x + {i}",
        "composite_functions": [],
        "_input_type": "int",
    }
    row.update(overrides)
    return row


def induction_row(i: int, **overrides: Any) -> dict[str, Any]:
    """A row in the original `*_code_f_seed_io.jsonl` schema."""
    row = {
        "snippet": f"def f(x):\n    return x * {i}",
        "inputs": [str(n) for n in range(10)],
        "outputs": [str(n * i) for n in range(10)],
        "message": f"multiplies by {i}",
        "imports": [],
    }
    row.update(overrides)
    return row


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- zero data


def test_zero_triplet_is_identity_on_hello_world() -> None:
    triplet = zero_triplet()
    assert triplet.program == "def f(a):\n    return a"
    assert triplet.input == "'Hello world'"
    assert triplet.output == "'Hello world'"
    assert triplet.imports == ()
    assert triplet.step == 0


def test_zero_induction_task_has_six_identity_pairs() -> None:
    task = zero_induction_task()
    assert task.program == IDENTITY_PROGRAM
    assert len(task.inputs) == len(task.outputs) == 6
    assert task.message
    assert task.step == 0
    assert "{'a': 1, 'b': 2}" in task.outputs
    assert "dict(a=1, b=2)" in task.inputs
    assert any(len(inp) == 16 and inp.isdigit() for inp in task.inputs)


def test_zero_induction_outputs_are_reprs_of_inputs() -> None:
    # Trusted constants, evaluated in the test process only to check the hand-written outputs.
    task = zero_induction_task()
    values = [eval(inp) for inp in task.inputs]  # noqa: S307
    assert [repr(v) for v in values] == list(task.outputs)
    kinds = [type(v) for v in values]
    assert kinds == [str, int, dict, tuple, str, int]
    assert all(isinstance(x, float) for x in values[3])
    assert isinstance(eval(values[4]), list)  # noqa: S307 - the string holds a nested list
    assert isinstance(eval(values[4])[0], list)  # noqa: S307


# ----------------------------------------------------------------------------------- loading


def test_load_io_seeds_from_original_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seed_io.jsonl", [io_row(i) for i in range(5)])
    seeds = load_io_seeds(path, limit=256)
    assert len(seeds) == 5
    assert all(isinstance(s, Triplet) and s.step == 0 for s in seeds)
    assert seeds[1] == Triplet(
        program="import math\ndef f(x):\n    return x + 1", input="1", output="2", imports=("import math",)
    )


def test_load_io_seeds_keeps_first_limit_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seed_io.jsonl", [io_row(i) for i in range(10)])
    seeds = load_io_seeds(path, limit=3)
    assert [s.input for s in seeds] == ["0", "1", "2"]


def test_limit_stops_before_later_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "seed_io.jsonl"
    path.write_text(json.dumps(io_row(0)) + "\n\n" + json.dumps(io_row(1)) + "\n{broken\n")
    assert len(load_io_seeds(path, limit=2)) == 2


def test_json_suffix_is_read_as_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seed_io.json", [io_row(0), io_row(1)])
    assert len(load_io_seeds(path, limit=5)) == 2


def test_load_induction_seeds_from_original_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "code_f.jsonl", [induction_row(i) for i in range(1, 5)])
    seeds = load_induction_seeds(path, limit=2)
    assert len(seeds) == 2
    assert all(isinstance(s, InductionTask) and s.step == 0 for s in seeds)
    assert seeds[1].inputs == tuple(str(n) for n in range(10))
    assert seeds[1].outputs == tuple(str(n * 2) for n in range(10))
    assert seeds[1].message == "multiplies by 2"


def test_load_io_seeds_from_parquet_with_our_schema(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(
        [
            {"program": "def f(a):\n    return a", "input": "1", "output": "1",
             "imports": [], "step": 7},
            {"program": "import math\ndef f(a):\n    return -a", "input": "1", "output": "-1",
             "imports": ["import math"], "step": 9},
        ],
        schema=TRIPLET_SCHEMA,
    )
    path = tmp_path / "seeds.parquet"
    pq.write_table(table, path)
    seeds = load_io_seeds(path, limit=10)
    assert seeds == [
        Triplet("def f(a):\n    return a", "1", "1", (), 0),
        Triplet("import math\ndef f(a):\n    return -a", "1", "-1", ("import math",), 0),
    ]
    assert len(load_io_seeds(path, limit=1)) == 1


def test_load_io_seeds_from_parquet_with_original_columns(tmp_path: Path) -> None:
    path = tmp_path / "seeds.parquet"
    pq.write_table(pa.Table.from_pylist([io_row(i) for i in range(4)]), path)
    seeds = load_io_seeds(path, limit=3)
    assert [s.output for s in seeds] == ["0", "2", "4"]
    assert seeds[1].program.startswith("import math\ndef f(x)")


def test_load_induction_seeds_from_parquet(tmp_path: Path) -> None:
    ours = tmp_path / "ours.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"program": "def f(a):\n    return a", "inputs": ["1", "2"], "outputs": ["1", "2"],
              "message": "identity", "imports": [], "step": 3}],
            schema=INDUCTION_SCHEMA,
        ),
        ours,
    )
    original = tmp_path / "original.parquet"
    pq.write_table(pa.Table.from_pylist([induction_row(3)]), original)
    [task] = load_induction_seeds(ours, limit=5)
    assert task == InductionTask("def f(a):\n    return a", ("1", "2"), ("1", "2"), "identity")
    [task] = load_induction_seeds(original, limit=5)
    assert task.outputs[2] == "6"


# ------------------------------------------------------------------------------------ errors


def assert_seed_error(call: Any, *fragments: str) -> None:
    with pytest.raises(SeedFileError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert_seed_error(lambda: load_io_seeds(path, 4), str(path), "not found")


def test_malformed_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "seed_io.jsonl"
    path.write_text(json.dumps(io_row(0)) + "\n" + '{"snippet": "x",\n')
    assert_seed_error(lambda: load_io_seeds(path, 4), str(path), "line 2", "malformed JSON")


def test_non_object_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seed_io.jsonl", [io_row(0), [1, 2]])
    assert_seed_error(lambda: load_io_seeds(path, 4), "line 2", "JSON object")


@pytest.mark.parametrize("key", ["snippet", "input", "output", "imports"])
def test_missing_io_key(tmp_path: Path, key: str) -> None:
    row = io_row(0)
    del row[key]
    path = write_jsonl(tmp_path / "seed_io.jsonl", [io_row(1), row])
    assert_seed_error(lambda: load_io_seeds(path, 4), str(path), "line 2", repr(key), "missing")


@pytest.mark.parametrize("key", ["snippet", "inputs", "outputs", "message", "imports"])
def test_missing_induction_key(tmp_path: Path, key: str) -> None:
    row = induction_row(1)
    del row[key]
    path = write_jsonl(tmp_path / "code_f.jsonl", [row])
    assert_seed_error(lambda: load_induction_seeds(path, 4), "line 1", repr(key), "missing")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("input", 3, "must be a string, got int"),
        ("output", None, "must be a string, got null"),
        ("snippet", ["def f(): pass"], "must be a string, got list"),
        ("imports", "import math", "must be a list of strings, got str"),
        ("imports", ["import math", 4], "'imports'[1] must be a string"),
        ("snippet", "   ", "is empty"),
    ],
)
def test_wrong_io_value_types(tmp_path: Path, key: str, value: Any, expected: str) -> None:
    path = write_jsonl(tmp_path / "seed_io.jsonl", [io_row(0, **{key: value})])
    assert_seed_error(lambda: load_io_seeds(path, 4), str(path), "line 1", expected)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"outputs": ["1"] * 9}, "10 inputs but 9 outputs"),
        ({"inputs": ["1"], "outputs": ["1"]}, "at least 2"),
        ({"message": 5}, "'message' must be a string"),
        ({"inputs": "1, 2"}, "'inputs' must be a list of strings"),
    ],
)
def test_bad_induction_rows(tmp_path: Path, overrides: dict[str, Any], expected: str) -> None:
    path = write_jsonl(tmp_path / "code_f.jsonl", [induction_row(1, **overrides)])
    assert_seed_error(lambda: load_induction_seeds(path, 4), "line 1", expected)


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "seeds.parquet"
    rows = [io_row(0), io_row(1, input=None)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert_seed_error(lambda: load_io_seeds(path, 4), str(path), "row 2", "'input'")

    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.Table.from_pylist([{"snippet": "def f(a): return a", "input": "1"}]), missing)
    assert_seed_error(lambda: load_io_seeds(missing, 4), "row 1", "'output'", "missing")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "seeds.parquet"
    path.write_bytes(b"not parquet at all")
    assert_seed_error(lambda: load_io_seeds(path, 4), str(path), "Parquet")


def test_unknown_suffix_and_empty_file(tmp_path: Path) -> None:
    csv = tmp_path / "seeds.csv"
    csv.write_text("snippet,input\n")
    assert_seed_error(lambda: load_io_seeds(csv, 4), ".csv", ".jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert_seed_error(lambda: load_io_seeds(empty, 4), str(empty), "no rows")


def test_invalid_limit(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "seed_io.jsonl", [io_row(0)])
    with pytest.raises(ValueError, match="limit"):
        load_io_seeds(path, 0)


def test_programs_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    payload = f"open({str(marker)!r}, 'w').write('x')"
    row = io_row(0, snippet=f"{payload}\ndef f(a):\n    return a", input=payload, output=payload)
    path = write_jsonl(tmp_path / "seed_io.jsonl", [row])
    [seed] = load_io_seeds(path, 1)
    assert seed.input == payload
    assert not marker.exists()


def test_imports_kept_beside_the_snippet_are_prepended(tmp_path: Path) -> None:
    path = tmp_path / "io.jsonl"
    rows = [
        {"snippet": "def f(a):\n    return math.floor(a)", "input": "1.5", "output": "1", "imports": ["import math"]},
        {"snippet": "import math\ndef f(a):\n    return math.floor(a)", "input": "2.5", "output": "2", "imports": ["import math"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first, second = load_io_seeds(path, limit=2)
    assert first.program == "import math\ndef f(a):\n    return math.floor(a)"
    assert second.program == rows[1]["snippet"]  # already there: not repeated
