"""The original's executor rules as settings (issue 24): which exceptions fail a run, one hash
seed per run, the original deduction comparison, numpy 1.x reprs. Each with its alternative."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azr.config.schema import AZRConfig, RewardConfig, SandboxConfig, TaskConfig
from azr.sandbox import SandboxExecutor
from azr.sandbox.api import AbductionCheck, DeductionCheck, ExecStatus, InductionCheck, ProgramRun
from azr.selfplay.parsing import ProgramProposal
from azr.selfplay.solution_scoring import estimate_learnability
from azr.selfplay.task_records import Triplet
from azr.selfplay.task_types import TaskType
from azr.selfplay.validation import validate_program_proposals

ORIGINAL = SandboxConfig(exception_rule="original", determinism="one_process", timeout_s=5)
SANE = SandboxConfig(timeout_s=5)


@pytest.fixture(scope="module")
def original() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(ORIGINAL, workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def sane() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(SANE, workers=2) as executor:
        yield executor


RAISES = {
    "bare Exception": ("def f(x):\n    raise Exception()", True),
    "StopIteration": ("def f(x):\n    return next(iter([]))", True),
    "custom class": ("class Oops(Exception):\n    pass\ndef f(x):\n    raise Oops('bad')", True),
    "message with error": ("def f(x):\n    raise Exception('an error here')", False),
    "ValueError": ("def f(x):\n    raise ValueError('v')", False),
    "nondeterministic": ("calls = []\ndef f(x):\n    calls.append(1)\n    return len(calls)", True),
}


@pytest.mark.parametrize("name", list(RAISES))
def test_exception_rule(name: str, original: SandboxExecutor, sane: SandboxExecutor) -> None:
    program, passes = RAISES[name]
    proposal = ProgramProposal(program, "1", ())
    tasks = TaskConfig()
    (kept,) = validate_program_proposals([proposal], original, tasks, exception_rule="original")
    (refused,) = validate_program_proposals([proposal], sane, tasks)
    assert kept.valid is passes, kept
    if passes:
        assert kept.task.output == ""  # the original stored the empty result
    assert not refused.valid


def test_timeouts_and_sandbox_failures_never_pass_the_original_rule(original: SandboxExecutor) -> None:
    (slow,) = validate_program_proposals([ProgramProposal("def f(x):\n    while True:\n        pass", "1", ())],
                                         original, TaskConfig(), exception_rule="original")
    assert not slow.valid


SET_ORDER = "def f(words):\n    return str(set(words))"


def test_one_hash_seed_per_run_keeps_set_order_programs(original: SandboxExecutor, sane: SandboxExecutor) -> None:
    words = "['apple', 'banana', 'cherry', 'dates', 'elder', 'figs', 'grape']"
    (one,) = original.run([ProgramRun(SET_ORDER, (words,), True)])
    (two,) = sane.run([ProgramRun(SET_ORDER, (words,), True)])
    assert one.ok, one
    assert two.calls[0].status is ExecStatus.NONDETERMINISTIC
    # the same-process double call is kept
    (twice,) = original.run([ProgramRun(RAISES["nondeterministic"][0], ("1",), True)])
    assert twice.calls[0].status is ExecStatus.NONDETERMINISTIC
    # one seed for the whole run: the same output every time
    again = original.run([ProgramRun(SET_ORDER, (words,), True)] * 3)
    assert {r.outputs for r in again} == {one.outputs}


COUNTER = "from collections import Counter\ndef f(s):\n    return Counter(s)"


def test_original_deduction_comparison(original: SandboxExecutor) -> None:
    checks = [
        DeductionCheck("4", "2+2", "def f(x):\n    return x", "4", comparison="original"),
        DeductionCheck("4", "2+2", "def f(x):\n    return x", "4"),
        DeductionCheck("Counter({'a': 1})", "Counter({'a': 1})", COUNTER, "'a'", comparison="original"),
        DeductionCheck("Counter({'a': 1})", "Counter({'a': 1})", COUNTER, "'a'"),
        DeductionCheck("[1, 2]", "[1,2]", "def f(x):\n    return x", "[1, 2]", comparison="original"),
    ]
    verdicts = original.verify(checks)
    assert [v.matched for v in verdicts] == [1, 0, 0, 1, 1]


def test_original_abduction_refuses_multi_line_answers(original: SandboxExecutor) -> None:
    program = "def f(xs):\n    return sum(xs)"
    multi, single, lenient = original.verify([
        AbductionCheck(program, "3", "[1,\n2]", comparison="original"),
        AbductionCheck(program, "3", "[1, 2]", comparison="original"),
        AbductionCheck(program, "3", "[1,\n2]"),
    ])
    assert (multi.matched, single.matched, lenient.matched) == (0, 1, 1)


def test_monte_carlo_leaves_out_answers_that_raise_quietly(original: SandboxExecutor, sane: SandboxExecutor) -> None:
    program = "def f(x):\n    if x < 0:\n        raise StopIteration\n    return x * 2"
    task = Triplet(program, "3", "6", ())
    answers = [[f"</think><answer>```input\n{a}\n```</answer>" for a in ("3", "1", "-1", "-2")]]
    config = RewardConfig()
    (kept,) = estimate_learnability(TaskType.ABDUCTION, [task], answers, original, config)
    (all_four,) = estimate_learnability(TaskType.ABDUCTION, [task], answers, sane, config)
    assert (kept.solve_rate, kept.scored) == (0.5, 2)  # the two quiet exceptions are left out
    assert (all_four.solve_rate, all_four.scored) == (0.25, 4)


def test_induction_pairs_that_raise_quietly_are_left_out(original: SandboxExecutor) -> None:
    candidate = "def f(x):\n    if x == 2:\n        raise StopIteration\n    return x"
    (verdict,) = original.verify([InductionCheck(candidate, ("1", "2", "3"), ("1", "2", "3"))])
    assert (verdict.matched, verdict.total) == (2, 2)
    (none_scored,) = original.verify([InductionCheck("def f(x):\n    raise StopIteration", ("1",), ("1",))])
    assert (none_scored.matched, none_scored.total) == (0, 1)  # the original gave 0, not None


NUMPY = "import numpy as np\ndef f(x):\n    return np.int64(x) * 2"


def test_numpy_scalars_print_as_numpy_1(original: SandboxExecutor) -> None:
    (legacy,) = original.run([ProgramRun(NUMPY, ("5",), True)])
    assert legacy.outputs == ("10",), legacy
    with SandboxExecutor(SandboxConfig(numpy_repr="native"), workers=1) as native:
        (result,) = native.run([ProgramRun(NUMPY, ("5",), True)])
    assert result.outputs == ("np.int64(10)",)


@pytest.mark.parametrize("preset", ["qwen2.5-coder-7b", "qwen2.5-7b", "qwen2.5-coder-3b", "qwen2.5-14b",
                                    "qwen2.5-coder-14b", "llama-3.1-8b"])
def test_paper_presets_take_the_original_rules(preset: str) -> None:
    from azr.config.loading import load_preset

    config = AZRConfig.model_validate(load_preset(preset))
    assert config.sandbox.exception_rule == "original" and config.sandbox.determinism == "one_process"
    assert config.reward.answer_comparison == "original" and config.reward.solver_parsing == "original"
    assert config.tasks.proposal_parsing == "original"
