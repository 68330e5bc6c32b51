"""HumanEval+, MBPP+ and LiveCodeBench scoring on fixture files in the public layouts: the right
solution passes; wrong, slow, crashing and nondeterministic ones fail, each for its reason; the
private tests' pickle is decoded without unpickling anything but a string."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from azr.config.schema import SandboxConfig
from azr.eval.benchmarks import evalplus
from azr.eval.benchmarks import livecodebench
from azr.eval.benchmarks.registry import get_benchmark
from azr.eval.scoring.code_benchmarks import sandbox_for, score_generated
from azr.eval.benchmarks.livecodebench import decode_private_tests
from azr.eval.benchmarks.problems import EvalDataError, LiveCodeProblem, PlusProblem
from azr.sandbox import SandboxExecutor
from tests.support.paper_fixtures import HUMANEVAL_PLUS, MBPP_PLUS, livecodebench_rows, write_jsonl


@pytest.fixture(scope="module")
def quick_limits() -> Iterator[None]:
    """Short per-test limits so that the slow solutions fail in about a second."""
    saved = (evalplus.TIME_LIMITS.min_s, livecodebench.TEST_TIMEOUT_S)
    evalplus.TIME_LIMITS.min_s, livecodebench.TEST_TIMEOUT_S = 1.0, 1.0
    yield
    evalplus.TIME_LIMITS.min_s, livecodebench.TEST_TIMEOUT_S = saved


@pytest.fixture(scope="module")
def executor(quick_limits: None) -> Iterator[SandboxExecutor]:
    with SandboxExecutor(SandboxConfig(timeout_s=20.0, cpu_time_s=20, file_size_mb=64)) as sandbox:
        yield sandbox


def outcomes(problems: list, solutions: list[str], executor: SandboxExecutor) -> list[tuple[bool, bool | None, str, str]]:
    return [(s.correct, s.base_correct, s.status, s.error) for s in score_generated(problems, solutions, executor)]


def test_humaneval_plus_rules(tmp_path: Path, executor: SandboxExecutor) -> None:
    path = write_jsonl(tmp_path / "HumanEvalPlus.jsonl.gz", HUMANEVAL_PLUS)
    add, root = get_benchmark("humaneval-plus").load(str(path))
    assert isinstance(add, PlusProblem) and add.id == "HumanEval/0" and add.dataset == "humaneval"
    cases = [
        (add, "    return a + b\n"),  # a body continuing the prompt
        (add, "def add_pair(a, b):\n    return b + a\n"),  # a whole function
        (add, "    return a - b\n"),
        (add, "    while True:\n        pass\n"),
        (add, "    raise ValueError('no')\n"),
        (add, "    import random\n    return a + b + random.random()\n"),
        (add, "    return a + b if a < 100 else 0\n"),  # right on the base tests, wrong on plus
        (add, "    return round(a + b, 9)\n"),  # 0.30000000000000004 vs 0.3: within the float tolerance
        (root, "    return 1.0 + 1e-7\n"),  # a different value that is still a root: the special oracle
        (root, "    return 5.0\n"),
    ]
    got = outcomes([p for p, _ in cases], [s for _, s in cases], executor)
    assert got[0][:3] == got[1][:3] == (True, True, "ok")
    assert got[2][:3] == (False, False, "wrong") and "base test 0 gave -1, expected 3" in got[2][3]
    assert got[3][:3] == (False, False, "timeout") and "limit" in got[3][3]
    assert got[4][:3] == (False, False, "error") and "ValueError: no" in got[4][3]
    assert got[5][:3] == (False, False, "nondeterministic")
    assert got[6][:3] == (False, True, "wrong") and "plus test 0" in got[6][3]
    assert got[7][:3] == (True, True, "ok")
    assert got[8][:3] == (True, True, "ok")
    assert got[9][:2] == (False, False)


def test_mbpp_plus_types_inputs_and_compares_with_the_canonical_outputs(tmp_path: Path, executor: SandboxExecutor) -> None:
    path = write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)
    shared, perimeter = get_benchmark("mbpp-plus").load(str(path))
    assert shared.id == "Mbpp/2" and shared.dataset == "mbpp"
    cases = [
        (shared, "def similar_elements(a, b):\n    assert isinstance(a, tuple)\n    return tuple(set(a) & set(b))\n"),
        (shared, "def similar_elements(a, b):\n    return a + b\n"),
        (perimeter, "def square_perimeter(a):\n    return a * 4\n"),
        (perimeter, "def square_perimeter(a):\n    return a * a\n"),
        (perimeter, "def other(a):\n    return 4 * a\n"),
        (perimeter, ""),
    ]
    got = outcomes([p for p, _ in cases], [s for _, s in cases], executor)
    assert got[0][:3] == (True, True, "ok")  # Mbpp/2 receives tuples, as EvalPlus deserialises them
    assert got[1][:3] == (False, False, "wrong")
    assert got[2][:3] == (True, True, "ok")
    assert got[3][:3] == (False, False, "wrong")
    assert got[4][:3] == (False, False, "error") and "no function square_perimeter" in got[4][3]
    assert got[5][:3] == (False, False, "empty")


def test_livecodebench_functional_and_stdin(tmp_path: Path, executor: SandboxExecutor) -> None:
    path = write_jsonl(tmp_path / "test.jsonl", livecodebench_rows())
    two_sum, total = get_benchmark("livecodebench").load(str(path))
    assert isinstance(two_sum, LiveCodeProblem) and two_sum.id == "1" and two_sum.func_name == "twoSum"
    assert two_sum.public_tests == 1 and len(json.loads(two_sum.tests)) == 3
    assert total.id == "abc300_a" and total.func_name == "" and total.public_tests == 1
    right_two_sum = ("class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
                     "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
                     "                return (seen[target - x], i)\n            seen[x] = i\n")
    cases = [
        (two_sum, right_two_sum),
        (two_sum, "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]\n"),  # passes public only
        (two_sum, "class Solution:\n    def twoSum(self, nums, target):\n        while True: pass\n"),
        (two_sum, "class Solution:\n    def twoSum(self, nums, target):\n        return nums[99]\n"),
        (total, "n = int(input())\nprint(sum(float(x) for x in input().split()))\n"),  # 6.0 and 6: equal as decimals
        (total, "import sys\ndata = sys.stdin.buffer.read().split()\nprint(sum(map(float, data[1:])))\n"),
        (total, "print(open(0).read().split()[0])\n"),
        (total, "import random\nprint(random.random())\n"),
    ]
    got = outcomes([p for p, _ in cases], [s for _, s in cases], executor)
    assert got[0][:3] == (True, True, "ok")
    assert got[1][:3] == (False, True, "wrong") and "private test 2" in got[1][3]
    assert got[2][:3] == (False, False, "timeout")
    assert got[3][:3] == (False, False, "error") and "IndexError" in got[3][3]
    assert got[4][:3] == (True, True, "ok")
    assert got[5][:3] == (True, True, "ok")
    assert got[6][:3] == (False, False, "wrong")
    assert got[7][0] is False and got[7][2] in ("nondeterministic", "wrong")


def test_livecodebench_date_window_and_release_directory(tmp_path: Path) -> None:
    rows = livecodebench_rows()
    write_jsonl(tmp_path / "lcb" / "test.jsonl", rows[:1])
    write_jsonl(tmp_path / "lcb" / "test2.jsonl", rows[1:])
    benchmark = get_benchmark("livecodebench")
    assert [p.id for p in benchmark.load(str(tmp_path / "lcb"))] == ["1", "abc300_a"]
    window = benchmark.load(str(tmp_path / "lcb"), since=livecodebench.parse_date("2024-01-01", "--since"))
    assert [p.id for p in window] == ["abc300_a"]
    with pytest.raises(EvalDataError, match="no livecodebench problem"):
        benchmark.load(str(tmp_path / "lcb"), until=livecodebench.parse_date("2023-01-01", "--until"))
    with pytest.raises(EvalDataError, match="applies to livecodebench only"):
        get_benchmark("humaneval-plus").load(str(write_jsonl(tmp_path / "h.jsonl", HUMANEVAL_PLUS)),
                                             since=livecodebench.parse_date("2024-01-01", "--since"))


class _Boom:
    def __reduce__(self) -> tuple:
        import os

        return (os.system, ("echo pwned > /tmp/azr-pickle-pwned",))


def test_private_tests_never_unpickle_objects() -> None:
    tests = [{"input": "1", "output": "2", "testtype": "stdin"}]
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()
    assert decode_private_tests(packed) == tests
    assert decode_private_tests(json.dumps(tests)) == tests
    hostile = base64.b64encode(zlib.compress(pickle.dumps(_Boom()))).decode()
    with pytest.raises(ValueError, match="refusing to load"):
        decode_private_tests(hostile)
    assert not Path("/tmp/azr-pickle-pwned").exists()
    not_a_string = base64.b64encode(zlib.compress(pickle.dumps([1, 2]))).decode()
    with pytest.raises(ValueError, match="not a JSON string"):
        decode_private_tests(not_a_string)
    with pytest.raises(ValueError, match="neither JSON nor"):
        decode_private_tests("%%% not base64 %%%")


def test_code_sandbox_limits_cover_every_test() -> None:
    plus = PlusProblem("HumanEval/1", "humaneval", "def g(x):\n", "g", "    return x\n", "[[1]]", "[[2], [3]]")
    config = sandbox_for([plus], SandboxConfig())
    assert config.timeout_s >= 2 * evalplus.TIME_LIMITS.min_s * 3 and config.cpu_time_s >= config.timeout_s
    assert sandbox_for([], SandboxConfig()) == SandboxConfig()
