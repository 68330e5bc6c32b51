"""The algorithm library on the real sandbox: a propose batch validated, solutions scored and
learnability estimated end to end, with nothing evaluated in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azr.config.loading import build_config
from azr.selfplay.proposals import check_proposals, proposal_rewards
from azr.selfplay.task_records import Triplet
from azr.sandbox import SandboxExecutor
from azr.selfplay.solution_scoring import estimate_learnability, score_solutions
from azr.selfplay.task_types import TaskType

CONFIG = build_config("tiny", overrides=["sandbox.timeout_s=2"])


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor.from_run_config(CONFIG) as ex:
        yield ex


def response(answer: str) -> str:
    return f" thinking </think>\n<answer>{answer}</answer>"


def test_propose_batch_through_the_sandbox(executor: SandboxExecutor) -> None:
    responses = [
        response("```python\ndef count_runs(s):\n    runs = 1\n    for a, b in zip(s, s[1:]):\n        runs += a != b\n    return runs\n```\n```input\n'aabccc'\n```"),
        response("```python\nimport random\ndef f(n):\n    return random.random() * n\n```\n```input\n3\n```"),
        response("```python\ndef f(n):\n    return {str(i) for i in range(n)}\n```\n```input\n12\n```"),
        response("```python\ndef f(n):\n    return 10 // n\n```\n```input\n0\n```"),
        response("```python\ndef f(n):\n    while n:\n        pass\n```\n```input\n1\n```"),
    ]
    outcomes = check_proposals(TaskType.DEDUCTION, responses, CONFIG, executor)
    assert [o.label for o in outcomes] == ["", "banned_import", "nondeterministic", "runtime_error:ZeroDivisionError", "timeout"]
    task = outcomes[0].task
    assert isinstance(task, Triplet) and task.output == "3" and task.program.startswith("def f(s):")
    assert proposal_rewards(outcomes, [0.5, None, None, None, None], CONFIG) == [0.5, -1.0, -1.0, -1.0, -1.0]


def test_solutions_and_learnability_through_the_sandbox(executor: SandboxExecutor) -> None:
    task = Triplet("def f(xs):\n    return sorted(xs)[-2:]", "[4, 1, 9, 7]", "[7, 9]")
    deduction = score_solutions(
        TaskType.DEDUCTION, [task] * 3,
        [response("```output\n[7,9]\n```"), response("```output\n[9, 7]\n```"), "no tags [7, 9]"],
        executor, CONFIG.reward,
    )
    assert [o.reward for o in deduction] == [1.0, -0.5, -1.0]
    abduction = score_solutions(
        TaskType.ABDUCTION, [task] * 2,
        [response("```input\n[9, 7, 0]\n```"), response("```input\n0) or (True\n```")],
        executor, CONFIG.reward,
    )
    assert [o.reward for o in abduction] == [1.0, -0.5]
    rollouts = [[response("```input\n[7, 9]\n```"), response("```input\n[1, 2]\n```"), response("```input\n[9, 7]\n```"), response("")]]
    (estimate,) = estimate_learnability(TaskType.ABDUCTION, [task], rollouts, executor, CONFIG.reward)
    assert estimate.solve_rate == pytest.approx(0.5)
