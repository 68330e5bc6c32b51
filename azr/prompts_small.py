"""The `small` prompt profile: short questions with one worked answer, for small chat models.

The paper's prompts (azr.prompts) run to ~700 tokens of requirements before the task; a
135M-parameter chat model loses the answer format in them and never closes its think block, so
every reward is -1 and every TRR++ advantage is zero. These questions keep what the parsers and
the executor need (the fenced block tags, `f`, one input, the induction split) and show one
complete answer in the exact think/answer layout, so a small model can copy the shape and vary
the content. Only `tasks.prompt_profile: small` uses them; the paper presets keep the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence

from azr.records import Triplet
from azr.task_types import TaskType

EXAMPLE_PROGRAM = "def f(numbers):\n    total = 0\n    for n in numbers:\n        if n % 2 == 0:\n            total += n\n    return total"
_EXAMPLE_INPUT = "[1, 2, 3, 4]"
_EXAMPLE_OUTPUT = "6"


_REMINDER = "Reply in the same form as the example: <think> reasoning </think> then <answer> the block </answer>."


def _fence(tag: str, body: str) -> str:
    return f"```{tag}\n{body.rstrip(chr(10))}\n```"


def _example(think: str, answer: str) -> str:
    """A complete worked answer in the layout the format check reads."""
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def _references(references: Sequence[Triplet]) -> str:
    blocks = [
        f"{_fence('python', ref.program)}\n{_fence('input', ref.input)}\n{_fence('output', ref.output)}"
        for ref in references
    ]
    return "\n\n".join(blocks)


def io_propose_prompt(task_type: TaskType, references: Sequence[Triplet], banned_imports: Sequence[str]) -> str:
    """A new program `f` plus one input; the solver later predicts the output (deduction) or an
    input (abduction)."""
    goal = ("predict what f returns for your input" if task_type is TaskType.DEDUCTION
            else "find an input that makes f return the same output")
    worked = _example(
        "I will sum the even numbers of a list. For [1, 2, 3, 4] that is 2 + 4 = 6.",
        _fence("python", EXAMPLE_PROGRAM) + "\n" + _fence("input", _EXAMPLE_INPUT),
    )
    sections = [
        f"Write a new Python function named f and one input for it. Another model will have to {goal}.",
        "Rules: one function named f with at least one argument; it returns a value; no printing, "
        f"no randomness, no time, no files; do not import {', '.join(sorted(set(banned_imports)))}.",
    ]
    if references:
        sections.append("Make yours different from these existing tasks:\n" + _references(references))
    sections.append("Close your thinking with </think>, then answer exactly like this example:\n" + worked)
    return "\n\n".join(sections) + "\n"


def induction_propose_prompt(program: str, num_inputs: int) -> str:
    """`num_inputs` inputs for a given program plus a message describing it."""
    example_inputs = ["[1, 2]", "[5, 6, 7]", "[]", "[-2, 3]", "[10]", "[4, 4, 1]", "[0, 9]", "[8, 2, 6]",
                      "[3]", "[7, 7]"]
    blocks = "\n".join(_fence("input", example_inputs[k % len(example_inputs)]) for k in range(num_inputs))
    worked = _example(
        "The function takes a list of numbers, so I give lists of different lengths.",
        blocks + "\n" + _fence("message", "Add up the even numbers of the list."),
    )
    return "\n\n".join([
        f"Give {num_inputs} different inputs for the function f below, each in its own input block, "
        "and a message block that says what f does (without the code). Another model will see some "
        "inputs with their outputs and must rewrite f.",
        "Function:\n" + _fence("python", program),
        "Close your thinking with </think>, then answer exactly like this example:\n" + worked,
    ]) + "\n"


def deduction_solve_prompt(program: str, input: str) -> str:
    worked = _example("The even numbers are 2 and 4, and 2 + 4 = 6.", _fence("output", _EXAMPLE_OUTPUT))
    return "\n\n".join([
        "What does f return for the input? Give the value in an output block.",
        "Example: for\n" + _fence("python", EXAMPLE_PROGRAM) + "\nwith input " + _EXAMPLE_INPUT
        + ", answer:\n" + worked,
        "Now this one:\n" + _fence("python", program) + "\n" + _fence("input", input),
        _REMINDER,
    ]) + "\n"


def abduction_solve_prompt(program: str, output: str) -> str:
    worked = _example("I need even numbers that add up to 6, for example 2 and 4.", _fence("input", "[2, 4]"))
    return "\n\n".join([
        "Find an input for which f returns the given output. Give it in an input block.",
        "Example: for\n" + _fence("python", EXAMPLE_PROGRAM) + "\nwith output " + _EXAMPLE_OUTPUT
        + ", answer:\n" + worked,
        "Now this one:\n" + _fence("python", program) + "\n" + _fence("output", output),
        _REMINDER,
    ]) + "\n"


def induction_solve_prompt(pairs: Sequence[tuple[str, str]], message: str) -> str:
    worked = _example("Each output is the input doubled.", _fence("python", "def f(x):\n    return x * 2"))
    shown = "\n".join(f"f({inp}) = {out}" for inp, out in pairs)
    return "\n\n".join([
        "Write a Python function f that gives these outputs for these inputs. Give it in a python block.",
        "Example: for f(1) = 2 and f(5) = 10, answer:\n" + worked,
        f"Now this one:\n{shown}\nHint: {message}",
        _REMINDER,
    ]) + "\n"
