"""The `small` prompt profile: every worked answer it shows passes the project's own format check
and parsers (a model that copies the shape is rewarded for the format), the wrappers show it as
an earlier turn, and the paper profile is unchanged."""

from __future__ import annotations

import pytest

from azr.config.schema import TaskConfig
from azr.selfplay.parsing import parse_generation, parse_induction_proposal, parse_program_proposal, parse_solution
from azr.selfplay.prompts.paper import propose_prompt_for, solve_prompt_for
from azr.selfplay.prompts.small import Question
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import R1Wrapper, make_wrapper

SMALL = TaskConfig(prompt_profile="small", induction_inputs=6)
REFS = [Triplet("def f(a):\n    return a", "'Hello world'", "'Hello world'")]
INDUCTION = InductionTask("def f(a):\n    return a", ("1", "2", "3", "4"), ("1", "2", "3", "4"), "identity")


def _demo_answer(question: Question) -> str:
    assert isinstance(question, Question) and question.demonstration
    answer = question.demonstration[1]
    assert answer.startswith("<think>")
    return answer.removeprefix("<think>")  # the prompt supplies <think>; the model writes the rest


@pytest.mark.parametrize("task_type", [TaskType.DEDUCTION, TaskType.ABDUCTION])
def test_io_propose_demonstration_parses_and_validates_shape(task_type: TaskType) -> None:
    question = propose_prompt_for(task_type, REFS, SMALL)
    generation = parse_generation(_demo_answer(question))
    assert generation.format_ok
    proposal = parse_program_proposal(generation.answer)
    assert proposal.program.startswith("def f(") and proposal.input == "[1, 2, 3, 4]"
    assert "Hello world" in question and "random" in question  # references and the banned list are shown


def test_induction_propose_demonstration_has_enough_inputs() -> None:
    question = propose_prompt_for(TaskType.INDUCTION, REFS[0].program, SMALL)
    generation = parse_generation(_demo_answer(question))
    assert generation.format_ok
    proposal = parse_induction_proposal(generation.answer, SMALL.induction_inputs)
    assert len(proposal.inputs) == 6 and proposal.message


@pytest.mark.parametrize("task_type, entry, expected", [
    (TaskType.DEDUCTION, REFS[0], "6"),
    (TaskType.ABDUCTION, REFS[0], "[2, 4]"),
    (TaskType.INDUCTION, INDUCTION, "def f(x):\n    return x * 2"),
])
def test_solve_demonstrations_parse(task_type: TaskType, entry, expected: str) -> None:  # noqa: ANN001
    question = solve_prompt_for(task_type, entry, "small")
    generation = parse_generation(_demo_answer(question))
    assert generation.format_ok
    assert parse_solution(task_type, generation.answer) == expected


def test_wrappers_show_the_demonstration_as_an_earlier_turn() -> None:
    from tests.unit.test_prompts import CHATML, CHATML_NO_SYSTEM, _offline_tokenizer

    question = solve_prompt_for(TaskType.DEDUCTION, REFS[0], "small")
    text = R1Wrapper().wrap(question)
    assert text.endswith(f"User: {question}\nAssistant: <think>")
    assert text.count("Assistant:") == 2 and question.demonstration[1] in text
    chat = make_wrapper("chat", _offline_tokenizer(CHATML), "small").wrap(question)
    assert chat.count("<|im_start|>assistant") == 2 and chat.endswith("<|im_start|>assistant\n<think>")
    assert chat.index(question.demonstration[1]) < chat.rindex(str(question))
    folded = make_wrapper("chat", _offline_tokenizer(CHATML_NO_SYSTEM), "small").wrap(question)
    assert folded.startswith("<|im_start|>user\nThink briefly") and folded.count("<|im_start|>assistant") == 2


def test_the_paper_profile_is_unchanged_and_much_longer() -> None:
    paper = solve_prompt_for(TaskType.DEDUCTION, REFS[0])
    assert not isinstance(paper, Question) and "# Task: Work Out the Output" in paper
    small = propose_prompt_for(TaskType.DEDUCTION, REFS, SMALL)
    assert len(small) * 2 < len(propose_prompt_for(TaskType.DEDUCTION, REFS, TaskConfig()))
    with pytest.raises(ValueError, match="unknown prompt profile"):
        solve_prompt_for(TaskType.DEDUCTION, REFS[0], "tiny")


def test_the_cpu_preset_ships_its_seed_tasks() -> None:
    from azr.selfplay.buffer import Buffers
    from azr.config.loading import build_config

    config = build_config("cpu")
    assert config.tasks.prompt_profile == "small"
    buffers = Buffers.initial(config.buffer, config.seed)
    assert len(buffers[TaskType.DEDUCTION]) == 12 and len(buffers[TaskType.INDUCTION]) == 12
    assert all(len(task.inputs) == 6 for task in buffers[TaskType.INDUCTION].entries)
    paper = build_config("qwen2.5-coder-7b")
    assert paper.tasks.prompt_profile == "paper" and paper.buffer.seed_io_file is None
