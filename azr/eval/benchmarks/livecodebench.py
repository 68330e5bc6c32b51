"""LiveCodeBench code generation (`code_generation_lite`, `release_v5`): the files, the hidden
tests, and the sandbox program that runs a solution on them.

Layout: one JSON object a line with `question_title`, `question_content`, `platform`,
`question_id`, `contest_id`, `contest_date`, `starter_code`, `difficulty`, `public_test_cases`
(a JSON string: a list of {"input", "output", "testtype"}), `private_test_cases` (the same list,
either as JSON or compressed: base64 of zlib of a pickled JSON string) and `metadata` (a JSON
string; `func_name` for LeetCode problems). `release_v5` is the files test.jsonl, test2.jsonl ...
test5.jsonl of the hub dataset `livecodebench/code_generation_lite` (May 2023 - Jan 2025, 880
problems); `--data` takes one of those files or a directory holding them.

The compressed private tests are a pickle. Nothing here unpickles arbitrary objects: the pickle
is read by an unpickler that refuses every class and callable (`find_class` raises) and
accepts only a str as the result, so the bytes can at most build strings, numbers and
containers, never run code, even from a tampered file; decompression is capped in size.

Judging, in the sandbox: functional problems call `Solution().<func_name>(*args)` with each
test's input lines parsed as JSON and compare the result (a tuple counts as a list) with the
JSON output; stdin problems run the program with the input on standard input (fd 0 too) and
compare the printed lines, stripped, line by line, as text or, failing that, as decimal
numbers. Public tests come first, the run stops at the first failure, each test under
`TEST_TIMEOUT_S` (the 60 s of the paper's harness), the whole solution under the sandbox limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from datetime import date, datetime
from pathlib import Path
from typing import Any

from azr.eval.benchmarks.ids import ID_FIELDS, row_id
from azr.eval.benchmarks.problems import EvalDataError, LiveCodeProblem

HUB_ID = "livecodebench/code_generation_lite"
RELEASE = "release_v5"
RELEASE_FILES: tuple[str, ...] = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl")
TEST_TIMEOUT_S = 60.0  # per test, the paper's harness (docs/algorithm.md §11.1); tests may lower it
TASK_TIMEOUT_CAP_S = 900.0
MAX_DECOMPRESSED_BYTES = 1 << 30
LCB_ID_FIELDS: tuple[str, ...] = (*ID_FIELDS, "question_id")


class _StringsOnly(pickle.Unpickler):
    """Refuses every global: a pickle can then only build plain data, never call anything."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: ARG002
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: private tests are a pickled string only")

    def persistent_load(self, pid: Any) -> Any:  # noqa: ARG002
        raise pickle.UnpicklingError("refusing a persistent id in the private tests")


def decode_private_tests(text: str) -> list[dict[str, Any]]:
    """The private tests of one row: plain JSON, or base64(zlib(pickle(JSON string)))."""
    if not text:
        return []
    try:
        tests = json.loads(text)
    except ValueError:
        try:
            packed = base64.b64decode(text.encode("ascii"), validate=True)
            inflater = zlib.decompressobj()
            raw = inflater.decompress(packed, MAX_DECOMPRESSED_BYTES)
            if inflater.unconsumed_tail:
                raise ValueError(f"the private tests inflate to more than {MAX_DECOMPRESSED_BYTES} bytes")
            decoded = _StringsOnly(io.BytesIO(raw)).load()
        except (UnicodeEncodeError, binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ValueError(f"private_test_cases is neither JSON nor base64/zlib/pickle: {exc}") from exc
        if not isinstance(decoded, str):
            raise ValueError(f"the private tests unpickle to a {type(decoded).__name__}, not a JSON string")
        tests = json.loads(decoded)
    return _tests(tests, "private_test_cases")


def _tests(value: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise ValueError(f"{field} is not a list of tests")
    tests = []
    for test in value:
        if not (isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)):
            raise ValueError(f"{field} has a test without string input and output")
        kind = test.get("testtype", "stdin")
        if kind not in ("stdin", "functional"):
            raise ValueError(f"{field} has a test of type {kind!r} (expected stdin or functional)")
        tests.append({"input": test["input"], "output": test["output"], "testtype": kind})
    return tests


def parse_date(text: str | None, option: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(str(text)[:10])
    except ValueError as exc:
        raise EvalDataError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from exc


def in_window(contest_date: str, since: date | None, until: date | None) -> bool:
    """Whether a problem's contest date lies in [since, until] (either end open when None)."""
    day = datetime.fromisoformat(contest_date).date() if contest_date else None
    if day is None:
        return since is None and until is None
    return (since is None or day >= since) and (until is None or day <= until)


def livecode_problem(origin: str, row: dict[str, Any], index: int) -> LiveCodeProblem | str:
    """One row of the layout above as a problem, or why it cannot be one."""
    fields = ("question_content", "public_test_cases")
    missing = [name for name in fields if not isinstance(row.get(name), str)]
    if missing:
        return f"{origin}: missing or non-string {', '.join(missing)}"
    try:
        public = _tests(json.loads(row["public_test_cases"]), "public_test_cases")
        private = decode_private_tests(row.get("private_test_cases") or "")
        metadata = json.loads(row.get("metadata") or "{}")
    except ValueError as exc:
        return f"{origin}: {exc}"
    func_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    tests = public + private
    if not tests:
        return f"{origin}: no tests"
    if any(t["testtype"] == "functional" for t in tests) and not isinstance(func_name, str):
        return f"{origin}: functional tests but no metadata.func_name"
    contest_date = str(row.get("contest_date") or "")
    try:
        if contest_date:
            datetime.fromisoformat(contest_date)
    except ValueError:
        return f"{origin}: contest_date {contest_date!r} is not an ISO date"
    return LiveCodeProblem(
        row_id(row, index, LCB_ID_FIELDS), str(row.get("question_title") or ""), row["question_content"],
        str(row.get("starter_code") or ""), str(row.get("platform") or ""), contest_date,
        str(row.get("difficulty") or ""), func_name if tests[0]["testtype"] == "functional" else "",
        json.dumps(tests), len(public),
    )


def release_paths(data: str) -> list[Path] | None:
    """The release's files when `data` is a directory holding them; None for anything else."""
    path = Path(data).expanduser()
    if not path.is_dir():
        return None
    found = [path / name for name in RELEASE_FILES if (path / name).is_file()]
    if not found:
        raise EvalDataError(f"--data {data}: the directory holds none of {', '.join(RELEASE_FILES)}")
    return found


def hub_release_files() -> list[str]:
    """Download the release's files from the hub (cached by huggingface_hub)."""
    from huggingface_hub import hf_hub_download

    try:
        return [hf_hub_download(HUB_ID, name, repo_type="dataset") for name in RELEASE_FILES]
    except Exception as exc:  # noqa: BLE001 - network, auth and layout errors all mean the same here
        raise EvalDataError(
            f"cannot download {HUB_ID} ({RELEASE}) from the Hugging Face hub ({type(exc).__name__}). "
            "Pass --data with test.jsonl ... test5.jsonl or a directory holding them"
        ) from exc


def solution_time_budget(problem: LiveCodeProblem) -> float:
    tests = len(json.loads(problem.tests))
    return min(TASK_TIMEOUT_CAP_S, (per_test_timeout_s() + 1.0) * tests + 5.0)


def per_test_timeout_s() -> float:
    """The per-test limit (read at use, so that a caller can change the module setting)."""
    return TEST_TIMEOUT_S


# The names LiveCodeBench makes available to every solution (its import preamble).
PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics, itertools, "
    "functools, operator, io, sys, json\nsys.setrecursionlimit(50000)\n"
)

_HARNESS = r'''
import io as _io
import json as _json
import os as _os
import signal as _signal
import sys as _sys
from decimal import Decimal as _Decimal, InvalidOperation as _InvalidOperation

_SOLUTION = {solution!r}
_TESTS = {tests!r}
_FUNC = {func_name!r}
_PUBLIC = {public!r}
_LIMIT = {limit!r}


class _Expired(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Expired()


def _lines(text):
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line):
    try:
        return [_Decimal(token) for token in line.split()]
    except (_InvalidOperation, ValueError):
        return None


def _same_output(printed, expected):
    got, want = _lines(printed), _lines(expected)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a == b:
            continue
        x, y = _decimals(a), _decimals(b)
        if x is None or y is None or x != y:
            return False
    return True


def _part(number):
    return ("public" if number < _PUBLIC else "private") + " test %d" % number


def _functional(code, tests):
    namespace = {{"__name__": "__solution__"}}
    exec(code, namespace)
    solution = namespace.get("Solution")
    method = getattr(solution(), _FUNC, None) if callable(solution) else namespace.get(_FUNC)
    if not callable(method):
        return "error: the solution defines no Solution." + _FUNC
    for number, test in enumerate(tests):
        args = [_json.loads(line) for line in test["input"].split("\n") if line.strip()]
        expected = _json.loads(test["output"])
        _signal.setitimer(_signal.ITIMER_REAL, _LIMIT)
        try:
            out = method(*args)
        except _Expired:
            return "timeout: %s took longer than %.0f s" % (_part(number), _LIMIT)
        except BaseException as exc:
            return "error: %s raised %s: %s" % (_part(number), type(exc).__name__, str(exc)[:200])
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        if isinstance(out, tuple):
            out = list(out)
        try:
            ok = out == expected
        except Exception:
            ok = False
        if not ok:
            return "wrong: %s gave %s, expected %s" % (_part(number), repr(out)[:200], test["output"][:200])
    return ""


def _standard_io(code, tests):
    for number, test in enumerate(tests):
        with open("stdin.txt", "w", encoding="utf-8") as handle:
            handle.write(test["input"])
        fd = _os.open("stdin.txt", _os.O_RDONLY)
        if fd != 0:  # a solution that closed fd 0 (open(0) does) leaves it free: then it is ours
            _os.dup2(fd, 0)
            _os.close(fd)
        printed = _io.BytesIO()
        stdout = _io.TextIOWrapper(printed, encoding="utf-8", write_through=True)
        saved = _sys.stdin, _sys.stdout
        _sys.stdin = _io.TextIOWrapper(_io.BufferedReader(_io.FileIO(0, "r", closefd=False)), encoding="utf-8")
        _sys.stdout = stdout
        failure = ""
        _signal.setitimer(_signal.ITIMER_REAL, _LIMIT)
        try:
            exec(code, {{"__name__": "__main__"}})
        except _Expired:
            failure = "timeout: %s took longer than %.0f s" % (_part(number), _LIMIT)
        except SystemExit:
            pass
        except BaseException as exc:
            failure = "error: %s raised %s: %s" % (_part(number), type(exc).__name__, str(exc)[:200])
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            try:
                stdout.flush()
            except BaseException:
                pass
            _sys.stdin, _sys.stdout = saved
        if failure:
            return failure
        text = printed.getvalue().decode("utf-8", "replace")
        if not _same_output(text, test["output"]):
            return "wrong: %s printed %r, expected %r" % (_part(number), text[:200], test["output"][:200])
    return ""


def f():
    _signal.signal(_signal.SIGALRM, _on_alarm)
    tests = _json.loads(_TESTS)
    try:
        code = compile(_SOLUTION, "<solution>", "exec")
    except SyntaxError as exc:
        return ("error", False, False, "the solution does not compile: %s" % exc)
    if tests[0]["testtype"] == "functional":
        failure = _functional(code, tests)
    else:
        failure = _standard_io(code, tests)
    status = failure.split(":", 1)[0] if failure else "passed"
    public_failed = failure and "public test" in failure
    return (status, not public_failed, not failure, failure)
'''


def livecode_program(problem: LiveCodeProblem, solution: str) -> str:
    """The sandbox program for one solution; `f()` returns (status, public tests passed, all
    tests passed, why the first failure failed)."""
    return _HARNESS.format(
        solution=PRELUDE + solution, tests=problem.tests, func_name=problem.func_name,
        public=problem.public_tests, limit=per_test_timeout_s(),
    )

