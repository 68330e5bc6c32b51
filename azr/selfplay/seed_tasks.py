"""Zero data and seed files that fill the task buffers at step 0 (docs/algorithm.md §8.2-§8.4).

Seed files are data, never code: programs and inputs are read as strings and validated for
shape and type only. Nothing from a file is evaluated here; the sandbox runs programs later.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from azr.pipeline.atomic_io import PathLike
from azr.selfplay.task_records import InductionTask, Triplet


IDENTITY_PROGRAM = "def f(a):\n    return a"

# The identity induction problem of the original seeding (docs/algorithm.md §8.2): a string, an int, a dict, a
# float tuple, a string holding a nested list, and a 16-digit int. Outputs are the repr strings
# the sandbox would produce; they are constants, so nothing is evaluated to get them.
ZERO_INDUCTION_INPUTS: tuple[str, ...] = (
    "'Hello world'",
    "1",
    "dict(a=1, b=2)",
    "(1.1, 1.2, 1.3)",
    "'[[1, 0, 0], [0, 0, 0], [0, 0, 0]]'",
    "1001101100010001",
)
ZERO_INDUCTION_OUTPUTS: tuple[str, ...] = (
    "'Hello world'",
    "1",
    "{'a': 1, 'b': 2}",
    "(1.1, 1.2, 1.3)",
    "'[[1, 0, 0], [0, 0, 0], [0, 0, 0]]'",
    "1001101100010001",
)
ZERO_INDUCTION_MESSAGE = "The function gives back exactly the value it is called with, unchanged."

_JSON_SUFFIXES = (".jsonl", ".json")
_PARQUET_SUFFIXES = (".parquet",)
# Our column name first, then the original's: either spelling is accepted in both formats.
_PROGRAM_KEYS = ("program", "snippet")


class SeedFileError(ValueError):
    """A seed file that cannot be used; the message names the file, the row and the fix."""


def zero_triplet() -> Triplet:
    """The single deduction/abduction task self-play starts from when no seed file is given."""
    return Triplet(program=IDENTITY_PROGRAM, input="'Hello world'", output="'Hello world'", step=0)


def zero_induction_task() -> InductionTask:
    """The single induction task self-play starts from when no seed file is given."""
    return InductionTask(
        program=IDENTITY_PROGRAM,
        inputs=ZERO_INDUCTION_INPUTS,
        outputs=ZERO_INDUCTION_OUTPUTS,
        message=ZERO_INDUCTION_MESSAGE,
        step=0,
    )


def load_io_seeds(path: PathLike, limit: int) -> list[Triplet]:
    """The first `limit` deduction/abduction seeds of a JSONL (original schema) or Parquet file.

    Rows need a program (`snippet` or `program`), `input`, `output` and `imports`; other keys
    (`original_snippet`, `composite_functions`, `_input_type`, `step`, ...) are ignored.
    """
    return [_triplet_from_row(row, where) for where, row in _read_rows(Path(path), limit)]


def load_induction_seeds(path: PathLike, limit: int) -> list[InductionTask]:
    """The first `limit` induction seeds of a JSONL (original `code_f` schema) or Parquet file.

    Rows need a program (`snippet` or `program`), `inputs`, `outputs` (same length, at least
    2), `message` and `imports`; other keys are ignored.
    """
    return [_induction_from_row(row, where) for where, row in _read_rows(Path(path), limit)]


def _with_imports(program: str, imports: tuple[str, ...]) -> str:
    """The program with any listed import it does not already contain prepended.

    The original kept imports beside the snippet and prepended them at execution time; our
    records hold the full source, so a snippet stored without its imports still runs.
    """
    present = {line.strip() for line in program.splitlines()}
    missing = [line.strip() for line in imports if line.strip() and line.strip() not in present]
    return "\n".join([*missing, program]) if missing else program


def _triplet_from_row(row: dict[str, Any], where: str) -> Triplet:
    required = "snippet (or program), input, output, imports"
    program = _program(row, where, required)
    input_text = _string(row, "input", where, required)
    output = _string(row, "output", where, required)
    imports = _string_list(row, "imports", where, required)
    return Triplet(_with_imports(program, imports), input_text, output, imports, step=0)


def _induction_from_row(row: dict[str, Any], where: str) -> InductionTask:
    required = "snippet (or program), inputs, outputs, message, imports"
    inputs = _string_list(row, "inputs", where, required)
    outputs = _string_list(row, "outputs", where, required)
    if len(inputs) != len(outputs):
        raise SeedFileError(
            f"{where}: has {len(inputs)} inputs but {len(outputs)} outputs; every input needs "
            "exactly one output (its repr string), in the same order"
        )
    if len(inputs) < 2:
        raise SeedFileError(
            f"{where}: has {len(inputs)} input/output pair(s); an induction task needs at least "
            "2, because the first half is shown to the solver and the rest is held out"
        )
    program = _program(row, where, required)
    message = _string(row, "message", where, required)
    imports = _string_list(row, "imports", where, required)
    return InductionTask(_with_imports(program, imports), inputs, outputs, message, imports, step=0)


def _program(row: dict[str, Any], where: str, required: str) -> str:
    key = next((k for k in _PROGRAM_KEYS if k in row), None)
    if key is None:
        raise SeedFileError(f"{where}: missing required key 'snippet'; rows need: {required}")
    program = _string(row, key, where, required)
    if not program.strip():
        raise SeedFileError(f"{where}: {key!r} is empty; it must hold the source of function f")
    return program


def _string(row: dict[str, Any], key: str, where: str, required: str) -> str:
    value = _require(row, key, where, required)
    if not isinstance(value, str):
        raise SeedFileError(
            f"{where}: {key!r} must be a string, got {_type_name(value)}; store Python values "
            "as their source text (e.g. \"'abc'\" or \"[1, 2]\")"
        )
    return value


def _string_list(row: dict[str, Any], key: str, where: str, required: str) -> tuple[str, ...]:
    value = _require(row, key, where, required)
    if not isinstance(value, list | tuple):
        raise SeedFileError(
            f"{where}: {key!r} must be a list of strings, got {_type_name(value)}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise SeedFileError(
                f"{where}: {key!r}[{index}] must be a string, got {_type_name(item)}; "
                f"{key!r} must be a list of strings"
            )
    return tuple(value)


def _require(row: dict[str, Any], key: str, where: str, required: str) -> Any:
    if key not in row:
        raise SeedFileError(f"{where}: missing required key {key!r}; rows need: {required}")
    return row[key]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def resolve_seed_path(path: Path) -> Path:
    """A relative seed path that does not exist here is looked up beside the presets
    (azr/config/presets/), so a preset can ship its seed files (`seeds/cpu_io.jsonl`)."""
    if path.is_absolute() or path.exists():
        return path
    from importlib import resources

    shipped = Path(str(resources.files("azr.config.presets"))) / path
    return shipped if shipped.is_file() else path


def _read_rows(path: Path, limit: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, row) pairs of the first `limit` rows; raises SeedFileError if there are none.

    Only the rows kept are read and checked, so a large file with a small limit is cheap.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    path = resolve_seed_path(path)
    if not path.is_file():
        raise SeedFileError(
            f"{path}: seed file not found; point the buffer config at an existing .jsonl or "
            ".parquet file, or leave it unset to start from the zero task"
        )
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        rows = _jsonl_rows(path, limit)
    elif suffix in _PARQUET_SUFFIXES:
        rows = _parquet_rows(path, limit)
    else:
        raise SeedFileError(
            f"{path}: unknown seed file type {path.suffix!r}; use .jsonl/.json (one JSON object "
            "per line) or .parquet"
        )
    if not rows:
        raise SeedFileError(f"{path}: the seed file has no rows; it needs at least one task")
    return iter(rows)


def _jsonl_rows(path: Path, limit: int) -> list[tuple[str, dict[str, Any]]]:
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if len(rows) >= limit:
                    break
                if line.strip():
                    where = f"{path}, line {line_number}"
                    rows.append((where, _parse_json_line(line, where)))
    except UnicodeDecodeError as error:
        raise SeedFileError(f"{path}: not valid UTF-8 text ({error}); save it as UTF-8") from error
    return rows


def _parse_json_line(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise SeedFileError(
            f"{where}: malformed JSON ({error.msg} at column {error.colno}); each line must be "
            "one complete JSON object"
        ) from error
    except RecursionError:
        raise SeedFileError(f"{where}: JSON nested too deeply to read; each line must be one seed object") from None
    if not isinstance(row, dict):
        raise SeedFileError(
            f"{where}: expected a JSON object, got {_type_name(row)}; each line must be one "
            "JSON object with the seed's keys"
        )
    return row


def _parquet_rows(path: Path, limit: int) -> list[tuple[str, dict[str, Any]]]:
    try:
        parquet = pq.ParquetFile(path)
        batches: list[pa.RecordBatch] = []
        count = 0
        for batch in parquet.iter_batches(batch_size=min(limit, 4096)):
            batches.append(batch)
            count += batch.num_rows
            if count >= limit:
                break
        table = pa.Table.from_batches(batches, schema=parquet.schema_arrow)
    except (pa.ArrowException, OSError) as error:
        raise SeedFileError(f"{path}: not a readable Parquet file ({error})") from error
    return [
        (f"{path}, row {index + 1} (0-based index {index})", row)
        for index, row in enumerate(table.slice(0, limit).to_pylist())
    ]
