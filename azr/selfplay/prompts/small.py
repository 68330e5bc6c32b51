"""The `small` prompt profile: short questions with one worked answer, for small chat models.

The paper's prompts (azr.selfplay.prompts.paper) run to ~700 tokens of requirements before the task; a
135M-parameter chat model loses the answer format in them and never closes its think block, so
every reward is -1 and every TRR++ advantage is zero. These questions keep what the parsers and
the executor need (the fenced block tags, `f`, one input, the induction split) in a few lines,
and each carries one worked exchange of its own kind (`Question.demonstration`: the same
question on a fixed example, answered in the exact think/answer layout) that the wrappers render
as an earlier conversation turn, so a small chat model has seen the format answered once.
Only `tasks.prompt_profile: small` uses them; the paper presets keep the paper's prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

from azr.selfplay.task_records import Triplet
from azr.selfplay.task_types import TaskType

EXAMPLE_PROGRAM = "def f(numbers):\n    total = 0\n    for n in numbers:\n        if n % 2 == 0:\n            total += n\n    return total"
_EXAMPLE_INPUT = "[1, 2, 3, 4]"
_EXAMPLE_OUTPUT = "6"


_FORMAT_LINE = "Reply with <think> short reasoning </think> and then <answer> {what} </answer>."


class Question(str):
    """A question text carrying one worked exchange (question, answer) of the same kind, which
    the wrappers (azr.selfplay.prompts.chat_format) show as an earlier turn. It is a plain string everywhere else."""

    demonstration: tuple[str, str] | None

    def __new__(cls, text: str, demonstration: tuple[str, str] | None = None) -> Question:
        question = super().__new__(cls, text)
        question.demonstration = demonstration
        return question


def _fence(tag: str, body: str) -> str:
    return f"```{tag}\n{body.rstrip(chr(10))}\n```"


def _answer(think: str, answer: str) -> str:
    """A complete answer in the layout the format check reads (the prompt supplies `<think>`)."""
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def _references(references: Sequence[Triplet]) -> str:
    """Existing tasks as plain lines, not fenced blocks: a small model copies fenced blocks into
    its reasoning instead of writing its answer."""
    return "\n\n".join(f"{ref.program.strip()}\n# f({ref.input}) returns {ref.output}" for ref in references)


def _io_text(task_type: TaskType, references: Sequence[Triplet], banned_imports: Sequence[str]) -> str:
    goal = ("predict what f returns for your input" if task_type is TaskType.DEDUCTION
            else "find an input that makes f return the same output")
    sections = [
        f"Write a new Python function named f and one input for it. Another model will have to {goal}.",
        "Rules: one function named f with at least one argument; it returns a value; no printing, "
        f"no randomness, no time, no files; do not import {', '.join(sorted(set(banned_imports)))}.",
    ]
    if references:
        sections.append("Make it different from these existing tasks:\n" + _references(references))
    sections.append(_FORMAT_LINE.format(what="a python block, then an input block"))
    return "\n\n".join(sections) + "\n"


def io_propose_prompt(task_type: TaskType, references: Sequence[Triplet], banned_imports: Sequence[str]) -> Question:
    """A new program `f` plus one input; the solver later predicts the output (deduction) or an
    input (abduction)."""
    worked = _answer("I sum the even numbers of a list. For [1, 2, 3, 4] that is 2 + 4 = 6.",
                     _fence("python", EXAMPLE_PROGRAM) + "\n" + _fence("input", _EXAMPLE_INPUT))
    return Question(_io_text(task_type, references, banned_imports), (_io_text(task_type, [], banned_imports), worked))


_EXAMPLE_INPUTS = ("[1, 2]", "[5, 6, 7]", "[]", "[-2, 3]", "[10]", "[4, 4, 1]", "[0, 9]", "[8, 2, 6]", "[3]", "[7, 7]")


def _induction_text(program: str, num_inputs: int) -> str:
    return "\n\n".join([
        f"Give {num_inputs} different inputs for the function f below, each in its own input block, "
        "and a message block that says what f does (without the code). Another model will see some "
        "inputs with their outputs and must rewrite f.",
        "Function:\n" + _fence("python", program),
        _FORMAT_LINE.format(what=f"{num_inputs} input blocks and a message block"),
    ]) + "\n"


def induction_propose_prompt(program: str, num_inputs: int) -> Question:
    """`num_inputs` inputs for a given program plus a message describing it."""
    blocks = "\n".join(_fence("input", _EXAMPLE_INPUTS[k % len(_EXAMPLE_INPUTS)]) for k in range(num_inputs))
    worked = _answer("f takes a list of numbers, so I give lists of different lengths.",
                     blocks + "\n" + _fence("message", "Add up the even numbers of the list."))
    return Question(_induction_text(program, num_inputs), (_induction_text(EXAMPLE_PROGRAM, num_inputs), worked))


def _deduction_text(program: str, input: str) -> str:
    return ("What does f return for this input?\n" + _fence("python", program) + "\n" + _fence("input", input)
            + "\n\n" + _FORMAT_LINE.format(what="an output block with the value") + "\n")


def deduction_solve_prompt(program: str, input: str) -> Question:
    worked = _answer("The even numbers are 2 and 4, and 2 + 4 = 6.", _fence("output", _EXAMPLE_OUTPUT))
    return Question(_deduction_text(program, input), (_deduction_text(EXAMPLE_PROGRAM, _EXAMPLE_INPUT), worked))


def _abduction_text(program: str, output: str) -> str:
    return ("Find an input for which f returns this output.\n" + _fence("python", program) + "\n" + _fence("output", output)
            + "\n\n" + _FORMAT_LINE.format(what="an input block") + "\n")


def abduction_solve_prompt(program: str, output: str) -> Question:
    worked = _answer("I need even numbers that add up to 6, for example 2 and 4.", _fence("input", "[2, 4]"))
    return Question(_abduction_text(program, output), (_abduction_text(EXAMPLE_PROGRAM, _EXAMPLE_OUTPUT), worked))


def _induction_solve_text(pairs: Sequence[tuple[str, str]], message: str) -> str:
    shown = "\n".join(f"f({inp}) = {out}" for inp, out in pairs)
    return ("Write a Python function f that gives these outputs for these inputs.\n" + shown + f"\nHint: {message}"
            + "\n\n" + _FORMAT_LINE.format(what="a python block") + "\n")


def induction_solve_prompt(pairs: Sequence[tuple[str, str]], message: str) -> Question:
    worked = _answer("Each output is the input doubled.", _fence("python", "def f(x):\n    return x * 2"))
    demo = _induction_solve_text([("1", "2"), ("5", "10")], "Double the number.")
    return Question(_induction_solve_text(pairs, message), (demo, worked))
