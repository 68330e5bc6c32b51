"""Reading JSONL files line by line, keeping bad lines as findings instead of stopping.

Benchmark data treats a bad line as fatal (the caller raises); a prediction file made by some
other system only reports it. Both need the same reading, with line numbers. `.gz` files are
read transparently (HumanEval ships gzipped).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azr.pipeline.atomic_io import PathLike
from azr.eval.benchmarks.problems import EvalDataError


@dataclass(frozen=True)
class JsonlLine:
    number: int  # 1-based line number in the file
    row: dict[str, Any]


@dataclass(frozen=True)
class BadLine:
    number: int
    reason: str


@dataclass
class JsonlContent:
    rows: list[JsonlLine] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def read_text(path: PathLike) -> str:
    """The whole file as text, or an EvalDataError naming the file and the cause."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EvalDataError(f"{path} does not exist") from exc
    except IsADirectoryError as exc:
        raise EvalDataError(f"{path} is a directory, not a JSONL file") from exc
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise EvalDataError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def parse_jsonl(text: str) -> JsonlContent:
    """Every non-blank line as a JSON object; lines that are not one are listed as bad."""
    content = JsonlContent()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            content.bad.append(BadLine(number, f"not JSON ({getattr(exc, 'msg', exc)})"))
            continue
        except RecursionError:
            content.bad.append(BadLine(number, "JSON nested too deeply to read"))
            continue
        if not isinstance(row, dict):
            content.bad.append(BadLine(number, f"a JSON {type(row).__name__}, not an object"))
            continue
        content.rows.append(JsonlLine(number, row))
    return content


def read_jsonl(path: PathLike) -> JsonlContent:
    return parse_jsonl(read_text(path))


def describe_bad_lines(path: PathLike, bad: list[BadLine], shown: int = 5) -> str:
    """'file.jsonl: line 3: not JSON (...); line 9: ...' with the first few lines."""
    parts = [f"line {b.number}: {b.reason}" for b in bad[:shown]]
    more = f" (and {len(bad) - shown} more)" if len(bad) > shown else ""
    return f"{path}: " + "; ".join(parts) + more
