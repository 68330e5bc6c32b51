"""Reward rules (docs/algorithm.md §7) and solve scoring through a scripted executor."""

from __future__ import annotations

import pytest

from azr.config.schema import RewardConfig
from azr.sandbox.api import AbductionCheck, DeductionCheck, ExecStatus, InductionCheck, Verdict
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.rewards import learnability, mean_accuracy, proposer_reward, solve_accuracy, solver_reward
from azr.selfplay.solution_scoring import build_check, estimate_learnability, score_solutions
from azr.selfplay.task_types import TaskType
from tests.support.fakes import ScriptedExecutor

CODE = RewardConfig()
PAPER = RewardConfig(learnability_zero="paper")


class TestProposerReward:
    def test_learnability_of_three_eighths(self) -> None:
        assert learnability(3 / 8) == pytest.approx(0.625)
        assert proposer_reward(True, True, 3 / 8, CODE) == pytest.approx(0.625)

    @pytest.mark.parametrize("solve_rate", [0.0, 1.0])
    def test_trivial_or_impossible(self, solve_rate: float) -> None:
        assert learnability(solve_rate) == 0.0
        assert proposer_reward(True, True, solve_rate, CODE) == -0.5
        assert proposer_reward(True, True, solve_rate, PAPER) == 0.0

    def test_invalid_or_unformatted(self) -> None:
        assert proposer_reward(False, True, 0.5, CODE) == -1.0
        assert proposer_reward(True, False, 0.5, CODE) == -1.0
        assert proposer_reward(False, False, 0.5, PAPER) == -1.0

    def test_mean_accuracy_leaves_out_unscored(self) -> None:
        assert mean_accuracy([1.0, None, 0.0, 1.0]) == pytest.approx(2 / 3)
        assert mean_accuracy([None, None]) == 0.0


class TestSolverReward:
    def test_cases(self) -> None:
        assert solver_reward(True, 1.0, CODE) == 1.0
        assert solver_reward(True, 0.0, CODE) == -0.5  # formatted but wrong
        assert solver_reward(False, 1.0, CODE) == -1.0  # right answer, broken format
        assert solver_reward(True, None, CODE) == -0.5  # could not be checked counts as wrong

    def test_induction_scoring_modes(self) -> None:
        partial = Verdict(matched=3, total=5)
        assert solve_accuracy(TaskType.INDUCTION, partial, "binary") == 0.0
        assert solve_accuracy(TaskType.INDUCTION, partial, "accuracy") == pytest.approx(0.6)
        assert solve_accuracy(TaskType.INDUCTION, partial, "if_one_correct") == 1.0
        assert solve_accuracy(TaskType.INDUCTION, Verdict(5, 5), "binary") == 1.0
        assert solve_accuracy(TaskType.DEDUCTION, Verdict(0, 0, ExecStatus.TIMEOUT)) is None


TRIPLET = Triplet("def f(a):\n    return a", "'x'", "'x'")
INDUCTION = InductionTask("def f(a):\n    return a", ("1", "2", "3", "4"), ("1", "2", "3", "4"), "identity", ("import math",))


def answer(text: str, formatted: bool = True) -> str:
    return f" t </think>\n<answer>{text}</answer>" if formatted else f" t <answer>{text}</answer>"


class TestChecks:
    def test_checks_carry_answers_as_data(self) -> None:
        # The gold program and input travel too: a gold output that is not a literal is
        # evaluated in the program's namespace (docs/algorithm.md §6.3).
        assert build_check(TaskType.DEDUCTION, TRIPLET, "'x'") == DeductionCheck("'x'", "'x'", TRIPLET.program, TRIPLET.input)
        assert build_check(TaskType.ABDUCTION, TRIPLET, "0) or (True") == AbductionCheck(
            TRIPLET.program, "'x'", "0) or (True", TRIPLET.input)
        check = build_check(TaskType.INDUCTION, INDUCTION, "def f(a):\n    return a")
        assert check == InductionCheck("def f(a):\n    return a", ("3", "4"), ("3", "4"), ("import math",), INDUCTION.program)


def by_answer(correct: set[str]):
    def verdict(check):
        value = getattr(check, "answer", None) or getattr(check, "answer_input", None) or check.candidate_program
        return Verdict(1 if value in correct else 0, 1)

    return verdict


class TestScoreSolutions:
    def test_rewards_per_case(self) -> None:
        executor = ScriptedExecutor(verdict_fn=by_answer({"'x'"}))
        responses = [
            answer("```output\n'x'\n```"),
            answer("```output\n'y'\n```"),
            answer("```output\n'x'\n```", formatted=False),
        ]
        outcomes = score_solutions(TaskType.DEDUCTION, [TRIPLET] * 3, responses, executor, CODE)
        assert [o.reward for o in outcomes] == [1.0, -0.5, -1.0]
        # identical checks are sent once
        assert len(executor.verify_batches[0]) == 2

    def test_induction_without_code_block(self) -> None:
        executor = ScriptedExecutor(verdict_fn=by_answer(set()))
        (outcome,) = score_solutions(TaskType.INDUCTION, [INDUCTION], [answer("it returns a")], executor, CODE)
        assert outcome.reward == -1.0 and not outcome.format_ok and outcome.answer is None


class TestMonteCarlo:
    def test_learnability_from_rollouts(self) -> None:
        executor = ScriptedExecutor(verdict_fn=by_answer({"'x'"}))
        good, bad = answer("```input\n'x'\n```"), answer("```input\n'z'\n```", formatted=False)
        rollouts = [[good, good, good] + [bad] * 5, [good] * 4]
        results = estimate_learnability(TaskType.ABDUCTION, [TRIPLET, TRIPLET], rollouts, executor, CODE)
        assert results[0].solve_rate == pytest.approx(3 / 8)  # format not required, bad answers count 0
        assert results[1].solve_rate == 1.0
        assert proposer_reward(True, True, results[0].solve_rate, CODE) == pytest.approx(0.625)
        assert len(executor.verify_batches) == 1 and len(executor.verify_batches[0]) == 2

    def test_unscored_rollouts_are_left_out(self) -> None:
        def verdict(check):
            return Verdict(0, 0, ExecStatus.TIMEOUT) if check.answer_input == "'t'" else Verdict(1, 1)

        executor = ScriptedExecutor(verdict_fn=verdict)
        rollouts = [[answer("```input\n't'\n```"), answer("```input\n'x'\n```")]]
        (result,) = estimate_learnability(TaskType.ABDUCTION, [TRIPLET], rollouts, executor, CODE)
        assert result.solve_rate == 1.0 and result.scored == 1
