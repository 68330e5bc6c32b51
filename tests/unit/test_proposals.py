"""A propose batch end to end through the algorithm: parse, validate, format, reward."""

from __future__ import annotations

import pytest

from azr.config.loading import build_config
from azr.sandbox.api import CallResult, ExecStatus
from azr.selfplay.proposals import check_proposals, proposal_rewards
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType
from tests.support.fakes import ScriptedExecutor, ok

PROGRAM = "def f(x):\n    return x * 3"


def response(answer: str, formatted: bool = True) -> str:
    think = " plan </think>\n" if formatted else " plan "
    return f"{think}<answer>{answer}</answer>"


def program_answer(name: str = "triple", input_text: str = "2") -> str:
    return f"```python\ndef {name}(x):\n    return x * 3\n```\n```input\n{input_text}\n```"


def test_deduction_batch_outcomes_and_rewards() -> None:
    config = build_config("tiny")
    executor = ScriptedExecutor({(PROGRAM, "2"): ok("6"), (PROGRAM, "'a'"): ok("'aaa'"), (PROGRAM, "None"): CallResult(ExecStatus.ERROR, "", "TypeError: NoneType")})
    responses = [
        response(program_answer()),  # valid, formatted
        response(program_answer(input_text="'a'"), formatted=False),  # valid, broken format
        response(program_answer(input_text="None")),  # raises
        response("no code at all"),  # parse failure
    ]
    outcomes = check_proposals(TaskType.DEDUCTION, responses, config, executor)
    assert [o.label for o in outcomes] == ["", "bad_format_but_valid", "runtime_error:TypeError", "no_code_block"]
    assert outcomes[0].task == Triplet(PROGRAM, "2", "6")
    assert outcomes[1].task is not None  # buffered even though its reward is -1
    assert len(executor.run_batches) == 1 and len(executor.run_batches[0]) == 3

    rewards = proposal_rewards(outcomes, [3 / 8, 0.5, None, None], config)
    assert rewards == [pytest.approx(0.625), -1.0, -1.0, -1.0]
    paper = build_config("tiny", overrides=["reward.learnability_zero=paper"])
    assert proposal_rewards(outcomes[:1], [1.0], paper) == [0.0]
    assert proposal_rewards(outcomes[:1], [1.0], config) == [-0.5]


def test_induction_batch_uses_the_shown_programs() -> None:
    config = build_config("tiny")  # 4 inputs per induction proposal
    source = Triplet(PROGRAM, "1", "3")
    executor = ScriptedExecutor({(PROGRAM, str(i)): ok(str(3 * i)) for i in range(5)})
    blocks = "\n".join(f"```input\n{i}\n```" for i in range(5))
    responses = [response(blocks + "\n```message\ntriples\n```"), response(blocks)]
    outcomes = check_proposals(TaskType.INDUCTION, responses, config, executor, sources=[source, source])
    assert isinstance(outcomes[0].task, InductionTask)
    assert outcomes[0].task.inputs == ("1", "2", "3", "4") and outcomes[0].task.outputs == ("3", "6", "9", "12")
    assert outcomes[1].label == "no_message"
    with pytest.raises(ValueError, match="source program"):
        check_proposals(TaskType.INDUCTION, responses, config, executor)


def test_rewards_need_one_rate_per_proposal() -> None:
    with pytest.raises(ValueError):
        proposal_rewards([], [0.5], build_config("tiny"))
