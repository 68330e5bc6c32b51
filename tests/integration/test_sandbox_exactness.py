"""Exactness of the sandbox: repr outputs, inputs evaluated in the program's namespace, and the
three solver checks (docs/algorithm.md §6.3) computed inside the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azr.config.schema import SandboxConfig
from azr.sandbox.api import AbductionCheck, DeductionCheck, ExecStatus, InductionCheck, ProgramRun
from azr.sandbox import SandboxExecutor
from azr.sandbox.answer_rules import values_equal


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(SandboxConfig(timeout_s=3), workers=2) as ex:
        yield ex


def outputs(executor: SandboxExecutor, program: str, *inputs: str) -> tuple[str, ...]:
    (result,) = executor.run([ProgramRun(program, inputs, True)])
    assert result.ok, result
    return result.outputs


def test_outputs_are_repr_strings(executor: SandboxExecutor) -> None:
    program = "def f(x):\n    return x"
    assert outputs(executor, program, "'a'", "(1,)", "{'k': [1.5, None]}", "b'\\x00'", "{1, 2}", "2**100") == (
        "'a'", "(1,)", "{'k': [1.5, None]}", "b'\\x00'", "{1, 2}", repr(2**100),
    )


def test_inputs_are_evaluated_in_the_program_namespace(executor: SandboxExecutor) -> None:
    program = (
        "from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\nSCALE = 3\n"
        "def f(p, g=None, **extra):\n    base = p.x * SCALE if isinstance(p, Point) else p\n"
        "    return (base, g(2) if g else None, sorted(extra.items()))"
    )
    got = outputs(executor, program, "Point(1, 2)", "dict(a=1)", "5, lambda v: v * SCALE", "*[7], **{'z': 0}", "SCALE, None, y=2")
    assert got == (
        "(3, None, [])", "({'a': 1}, None, [])", "(5, 6, [])", "(7, None, [('z', 0)])", "(3, None, [('y', 2)])",
    )


def test_several_calls_share_one_process(executor: SandboxExecutor) -> None:
    program = "COUNT = {'n': 0}\ndef f(a):\n    return a + 1"
    assert outputs(executor, program, "1", "2", "3") == ("2", "3", "4")


@pytest.mark.parametrize(
    ("gold", "answer", "expected"),
    [
        ("(1,)", "(1, )", True),
        ("'ab'", '"ab"', True),
        ("{'a': 1, 'b': [1, 2]}", "{ 'b' : [1,2], 'a':1 }", True),
        ("[1, 2]", "[2, 1]", False),
        ("1", "1.0", True),
        ("0.30000000000000004", "0.3", False),
        ("{1, 2}", "{2, 1}", True),
        ("'x'", "x", False),
        ("nan", "nan", False),  # not a literal: never matches, as in the original
        ("'ab...yz'", "'ab...yz'", True),
        ("<object at 0x1>", "<object at 0x1>", False),
        ("9**9**9", "9**9**9", False),  # an expression, not a literal: never evaluated
    ],
)
def test_deduction_is_literal_value_equality(executor: SandboxExecutor, gold: str, answer: str, expected: bool) -> None:
    (verdict,) = executor.verify([DeductionCheck(gold, answer)])
    assert verdict.all_correct is expected
    assert values_equal(gold, answer) is expected


ABDUCTION_PROGRAM = "def f(s):\n    return sorted(set(s))"


@pytest.mark.parametrize(
    ("answer", "matched", "status"),
    [
        ("'cab'", 1, ExecStatus.OK),
        ("'abcabc'", 1, ExecStatus.OK),  # any input giving the gold output counts
        ("['c', 'b', 'a']", 1, ExecStatus.OK),
        ("'ab'", 0, ExecStatus.OK),
        ("0) or (True", 0, ExecStatus.ERROR),  # the original's splice hack
        ("1, 2", 0, ExecStatus.ERROR),
        ("(setattr(f, '__code__', (lambda s: ['a', 'b', 'c']).__code__), 'x')[1]", 0, ExecStatus.BLOCKED),
        ("__import__('os')", 0, ExecStatus.BLOCKED),
    ],
)
def test_abduction_runs_f_on_the_answer(executor: SandboxExecutor, answer: str, matched: int, status: ExecStatus) -> None:
    (verdict,) = executor.verify([AbductionCheck(ABDUCTION_PROGRAM, "['a', 'b', 'c']", answer)])
    assert (verdict.matched, verdict.total, verdict.status) == (matched, 1, status), verdict


def test_an_always_equal_object_does_not_fool_the_check(executor: SandboxExecutor) -> None:
    program = "class Any:\n    def __eq__(self, other):\n        return True\ndef f(a):\n    return Any()"
    (verdict,) = executor.verify([AbductionCheck(program, "[1, 2, 3]", "0")])
    assert verdict.matched == 0


def test_induction_needs_every_hidden_output(executor: SandboxExecutor) -> None:
    hidden_inputs, hidden_outputs = ("3", "'ab'", "[1]"), ("6", "'abab'", "[1, 1]")
    good = "def f(x):\n    return x * 2"
    partial = "def f(x):\n    return x * 2 if isinstance(x, int) else x"
    crash = "def f(x):\n    return x + 1"
    uses_import = "def f(x):\n    return math.floor(x * 2)"
    verdicts = executor.verify([
        InductionCheck(good, hidden_inputs, hidden_outputs),
        InductionCheck(partial, hidden_inputs, hidden_outputs),
        InductionCheck(crash, hidden_inputs, hidden_outputs),
        InductionCheck(uses_import, ("1.5",), ("3",), imports=("import math",)),
    ])
    assert [(v.matched, v.total) for v in verdicts] == [(3, 3), (1, 3), (0, 3), (1, 1)]
    assert verdicts[0].all_correct and not verdicts[1].all_correct
    assert verdicts[2].status is ExecStatus.ERROR


def test_a_batch_keeps_its_order_across_workers(executor: SandboxExecutor) -> None:
    runs = [ProgramRun(f"def f(a):\n    return a * {i}", ("2",), i % 2 == 0) for i in range(50)]
    results = executor.run(runs)
    assert [r.outputs[0] for r in results] == [str(2 * i) for i in range(50)]
    checks = [DeductionCheck(str(i), str(i if i % 3 else i + 1)) for i in range(30)]
    assert [v.matched for v in executor.verify(checks)] == [0 if i % 3 == 0 else 1 for i in range(30)]
