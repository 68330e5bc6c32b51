"""HumanEval+ and MBPP+ (EvalPlus): the release files, and the sandbox program that judges one
solution the way EvalPlus does.

Layout: one JSON object a line with `task_id`, `prompt`, `entry_point`, `canonical_solution`,
`base_input` and `plus_input` (lists of argument lists; an empty object `{}`, as MBPP+ v0.2.0's
`Mbpp/793` has for `plus_input`, is read as EvalPlus reads it: it iterates the value, so an empty
one means no extra tests) and `atol`; HumanEval+ v0.1.10 and MBPP+
v0.2.0 are the versions the paper's harness pinned. By default they are downloaded from EvalPlus'
GitHub releases (azr/eval/benchmarks/downloads.py).

Judging, inside one sandbox process: the canonical solution runs first on every input (a fresh
copy of each), which gives the expected outputs and the reference time of each test; then the
candidate runs on the same inputs, each test under max(min_time_limit, factor x reference time)
(the paper's harness: 10 s and 8), stopping at the first failure of the base tests and of the
plus tests. An output matches when it equals the expected one, or, for floats (or when the
problem sets `atol`), when it is within atol + 1e-7 x |expected| elementwise; EvalPlus' special
oracles apply (HumanEval/32 checks the root, MBPP+ `are_equivalent`, `sum_div` and the tasks
that only ask for a non-None result). The problem passes on base+plus when both parts pass; the
base-only verdict is kept beside it.

Trust: as in EvalPlus, the expected outputs are in the memory of the process that runs the
candidate, so code written to search for them could forge a pass; the sandbox still bounds what
it can reach, and the verdict it returns is a small literal parsed with `ast.literal_eval`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azr.eval.benchmarks.downloads import cached_download
from azr.eval.benchmarks.ids import row_id
from azr.eval.benchmarks.problems import PlusProblem

HUMANEVAL_PLUS_VERSION = "v0.1.10"
MBPP_PLUS_VERSION = "v0.2.0"
HUMANEVAL_PLUS_URL = (
    f"https://github.com/evalplus/humanevalplus_release/releases/download/{HUMANEVAL_PLUS_VERSION}/HumanEvalPlus.jsonl.gz"
)
MBPP_PLUS_URL = f"https://github.com/evalplus/mbppplus_release/releases/download/{MBPP_PLUS_VERSION}/MbppPlus.jsonl.gz"
TASK_TIMEOUT_CAP_S = 600.0  # the sandbox's outer limit for one solution (every test together)


@dataclass
class TimeLimits:
    """Per-test limit = max(min_s, factor x the canonical solution's time on that test)."""

    min_s: float = 10.0  # --min-time-limit of the paper's run_evalplus.sh (docs/algorithm.md §11.1)
    factor: float = 8.0  # --gt-time-limit-factor of the same script


TIME_LIMITS = TimeLimits()  # the process-wide setting (a slow machine may raise it)


def default_file(dataset: str) -> str:
    if dataset == "humaneval":
        return str(cached_download(HUMANEVAL_PLUS_URL, f"HumanEvalPlus-{HUMANEVAL_PLUS_VERSION}.jsonl.gz", "HumanEval+"))
    return str(cached_download(MBPP_PLUS_URL, f"MbppPlus-{MBPP_PLUS_VERSION}.jsonl.gz", "MBPP+"))


def plus_problem(dataset: str) -> Callable[[str, dict[str, Any], int], PlusProblem | str]:
    """A row-to-problem function for `azr.eval.benchmarks.loaders._build`."""

    def make(origin: str, row: dict[str, Any], index: int) -> PlusProblem | str:
        row = {**row, **{name: [] for name in ("base_input", "plus_input") if row.get(name) == {}}}
        missing = [name for name in ("prompt", "entry_point", "canonical_solution") if not isinstance(row.get(name), str)]
        missing += [name for name in ("base_input", "plus_input") if not isinstance(row.get(name), list)]
        if missing:
            inputs = " (EvalPlus rows have lists of argument lists)" if {"base_input", "plus_input"} & set(missing) else ""
            return f"{origin}: missing or mistyped {', '.join(missing)}{inputs}"
        atol = row.get("atol", 0) or 0
        if isinstance(atol, bool) or not isinstance(atol, (int, float)):
            return f"{origin}: atol must be a number, got {atol!r}"
        try:
            base, plus = json.dumps(row["base_input"]), json.dumps(row["plus_input"])
        except (TypeError, ValueError) as exc:
            return f"{origin}: inputs are not JSON values: {exc}"
        return PlusProblem(
            row_id(row, index), dataset, row["prompt"], row["entry_point"], row["canonical_solution"], base, plus,
            float(atol),
        )

    return make


def solution_time_budget(problem: PlusProblem) -> float:
    """An upper bound for the sandbox's outer limit: every test at its floor, plus loading."""
    tests = len(json.loads(problem.base_input)) + len(json.loads(problem.plus_input))
    return min(TASK_TIMEOUT_CAP_S, TIME_LIMITS.min_s * (tests + 2) + 5.0)


_HARNESS = r'''
import copy as _copy
import json as _json
import math as _math
import signal as _signal
import time as _time

_DATASET = {dataset!r}
_TASK_NUMBER = {task_number!r}
_ENTRY = {entry_point!r}
_REFERENCE = {reference!r}
_SOLUTION = {solution!r}
_BASE = {base!r}
_PLUS = {plus!r}
_ATOL = {atol!r}
_MIN_LIMIT = {min_limit!r}
_FACTOR = {factor!r}
_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")


class _Expired(BaseException):
    pass


def _on_alarm(signum, frame):
    raise _Expired()


def _tupled(value):
    return tuple(_tupled(item) for item in value) if isinstance(value, list) else value


def _typed(inputs):
    """MBPP+ stores tuples, sets and complex numbers as JSON lists and strings; give each task
    the argument types its canonical solution expects."""
    n = _TASK_NUMBER
    if _DATASET != "mbpp" or n is None:
        return inputs
    groups = {{
        "tuple_args": {{2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630,
                       726, 740, 744, 809}},
        "tuple_items": {{63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}},
        "first_tuple_items": {{75, 413, 444, 753}},
        "second_tuple": {{106, 750}},
        "first_tuple": {{250, 405, 446, 617, 720, 763, 808}},
        "tuple_items_then_args": {{259, 401, 445}},
        "all_tuples": {{580, 615, 791}},
    }}
    if n in groups["tuple_args"]:
        return [[tuple(arg) for arg in args] for args in inputs]
    if n in groups["tuple_items"]:
        return [[[tuple(item) for item in arg] for arg in args] for args in inputs]
    if n in groups["first_tuple_items"]:
        return [[[tuple(item) for item in args[0]], args[1]] for args in inputs]
    if n in groups["second_tuple"]:
        return [[args[0], tuple(args[1])] for args in inputs]
    if n == 115:
        return [[[set(item) if isinstance(item, list) and item else {{}} for item in args[0]]] for args in inputs]
    if n == 124:
        return [[float(args[0]), complex(args[1])] for args in inputs]
    if n in groups["first_tuple"]:
        return [[tuple(args[0])] + list(args[1:]) for args in inputs]
    if n in groups["tuple_items_then_args"]:
        return [[tuple(tuple(item) for item in arg) for arg in args] for args in inputs]
    if n == 278:
        return [[tuple(tuple(item) if isinstance(item, list) else item for item in args[0])] for args in inputs]
    if n == 307:
        return [[tuple(args[0]), args[1], args[2]] for args in inputs]
    if n == 722:
        return [[{{key: tuple(value) for key, value in args[0].items()}}] + list(args[1:]) for args in inputs]
    if n == 252:
        return [[complex(args[0])] for args in inputs]
    if n in groups["all_tuples"]:
        return [_tupled(args) for args in inputs]
    return inputs


def _load(source, seconds):
    namespace = {{"__name__": "__solution__"}}
    _signal.setitimer(_signal.ITIMER_REAL, seconds)
    try:
        exec(compile(source, "<solution>", "exec"), namespace)
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
    function = namespace.get(_ENTRY)
    if not callable(function):
        raise NameError("the solution defines no function " + _ENTRY)
    return function


def _is_floats(value):
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, float) for item in value)


def _close(out, exp, atol):
    """numpy's assert_allclose rule (rtol 1e-7, NaN equals NaN), elementwise over sequences."""
    if isinstance(exp, (list, tuple)):
        if not isinstance(out, (list, tuple)) or len(out) != len(exp):
            return False
        return all(_close(a, b, atol) for a, b in zip(out, exp))
    if isinstance(out, bool) or isinstance(exp, bool):
        return out == exp
    try:
        a, b = complex(out), complex(exp)
    except (TypeError, ValueError):
        return False
    if _math.isnan(a.real) or _math.isnan(b.real):
        return _math.isnan(a.real) and _math.isnan(b.real)
    if _math.isinf(abs(a)) or _math.isinf(abs(b)):
        return a == b
    return abs(a - b) <= atol + 1e-7 * abs(b)


def _matches(inputs, out, exp):
    if _DATASET == "humaneval" and _ENTRY == "find_zero":
        coefficients = inputs[0]
        return abs(sum(c * _math.pow(out, i) for i, c in enumerate(coefficients))) <= max(_ATOL, 1e-6)
    try:
        exact = bool(out == exp)
    except Exception:
        exact = False
    if _DATASET == "mbpp":
        if _ENTRY == "are_equivalent":
            exact = True
        elif _ENTRY == "sum_div":
            exact = exact or out == 0
        elif _ENTRY in _NOT_NONE:
            exact = exp == (out is not None)
    atol = _ATOL
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        return _close(out, exp, atol)
    return exact


def _reference(function, inputs):
    outputs, times = [], []
    for args in inputs:
        started = _time.perf_counter()
        value = function(*_copy.deepcopy(args))
        times.append(_time.perf_counter() - started)
        outputs.append((value is not None) if (_DATASET == "mbpp" and _ENTRY in _NOT_NONE) else value)
    return outputs, times


def _check(function, inputs, expected, times, part):
    """'' when every test passes, else why the first failing one failed."""
    for number, (args, exp, reference_time) in enumerate(zip(inputs, expected, times)):
        limit = max(_MIN_LIMIT, _FACTOR * reference_time)
        _signal.setitimer(_signal.ITIMER_REAL, limit)
        try:
            out = function(*_copy.deepcopy(args))
        except _Expired:
            return "timeout: %s test %d took longer than its %.1f s limit" % (part, number, limit)
        except BaseException as exc:
            return "error: %s test %d raised %s: %s" % (part, number, type(exc).__name__, str(exc)[:200])
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        try:
            ok = _matches(args, out, exp)
        except Exception:
            ok = False
        if not ok:
            return "wrong: %s test %d gave %s, expected %s" % (part, number, repr(out)[:200], repr(exp)[:200])
    return ""


def f():
    _signal.signal(_signal.SIGALRM, _on_alarm)
    base = _typed(_json.loads(_BASE))
    plus = _typed(_json.loads(_PLUS))
    reference = _load(_REFERENCE, 60.0)
    expected_base, times_base = _reference(reference, base)
    expected_plus, times_plus = _reference(reference, plus)
    try:
        candidate = _load(_SOLUTION, _MIN_LIMIT)
    except _Expired:
        return ("timeout", False, False, "loading the solution took longer than %.1f s" % _MIN_LIMIT)
    except BaseException as exc:
        return ("error", False, False, "the solution does not load: %s: %s" % (type(exc).__name__, str(exc)[:200]))
    base_failure = _check(candidate, base, expected_base, times_base, "base")
    plus_failure = _check(candidate, plus, expected_plus, times_plus, "plus")
    failure = base_failure or plus_failure
    status = failure.split(":", 1)[0] if failure else "passed"
    return (status, not base_failure, not base_failure and not plus_failure, failure)
'''


def task_number(problem: PlusProblem) -> int | None:
    tail = problem.id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def plus_program(problem: PlusProblem, solution: str) -> str:
    """The sandbox program for one solution (a whole module); `f()` returns
    (status, base passed, base+plus passed, why the first failure failed)."""
    return _HARNESS.format(
        dataset=problem.dataset, task_number=task_number(problem), entry_point=problem.entry_point,
        reference=problem.prompt + problem.canonical_solution, solution=solution, base=problem.base_input,
        plus=problem.plus_input, atol=problem.atol, min_limit=TIME_LIMITS.min_s, factor=TIME_LIMITS.factor,
    )

