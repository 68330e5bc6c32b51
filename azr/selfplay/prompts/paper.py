"""The question texts of the six (task, role) prompts (docs/algorithm.md §3.2-§3.4).

The wording is our own; the structure and the markers are the original's, because the response
parsers and the reward depend on them: the fenced block tags (```python, ```input, ```output,
```message, ```input_k / ```output_k), the `<snippet_i>` reference layout and the induction call
hint. The texts returned here are the bare user questions; `azr.selfplay.prompts.chat_format` turns them into what
the model is fed. Every builder is a pure function of its arguments, so a prompt can be rebuilt
from a logged task exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from azr.selfplay.prompts import small as prompts_small
from azr.config.schema import TaskConfig
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType

CALL_HINT = "f(<|YOUR INPUT WILL BE PLUGGED HERE|>)"
"""The line shown after the program in the induction propose prompt (docs/algorithm.md §3.3)."""

REFERENCES_HEADING = "### Reference Code Snippets:"

PROMPT_PROFILES = ("paper", "small")
"""`tasks.prompt_profile`: the paper's texts, or short ones with a worked answer (small models)."""

# Example values shown in the "example" sections: a name string plus a dict.
_EXAMPLE_INPUT = "'Maria', {'age': 34, 'city': 'Lisbon'}"
_EXAMPLE_INPUT_2 = "'Tomas', {'age': 27, 'city': 'Oslo'}"
_EXAMPLE_OUTPUT = "{'age': 34, 'city': 'Lisbon'}"
_EXAMPLE_STUB = "def f(name: str, info: dict):\n    # code logic here\n    return result"

_STATE_TRACKING_BULLET = (
    "- Working out the result should require tracking state through several successive data "
    "transformations, so that it takes a long chain of reasoning."
)

# The proposer's code requirements, in the original's order. The induction solver gets the same
# list without the state-tracking bullet (docs/algorithm.md §3.4).
_CODE_REQUIREMENTS: tuple[str, ...] = (
    "- Name the entry function `f`; helper functions may be defined inside `f`.",
    "- `f` must return a value.",
    "- `f` must take at least one argument.",
    "- The code must be deterministic: the same input always gives the same output.",
    _STATE_TRACKING_BULLET,
    "- AVOID anything random, any date or time operation, input/output such as files or the "
    "network, printing or logging, and any other dependence on external state.",
    "- It must finish in under 10 seconds on an ordinary modern CPU.",
    "- Put every import and every class definition at the very top of the code.",
    "- The code should end with the return statement of `f`; anything written after it is "
    "discarded.",
)

_ARGUMENT_RULES = (
    "- Separate multiple arguments with commas.\n"
    "- Put quotes around string arguments."
)

_COMPLEXITY_HINT = (
    "Consider complex data structures such as trees, heaps, stacks, queues or graphs, or "
    "intricate control flow such as dynamic programming, recursion, divide and conquer, greedy "
    "choices or backtracking."
)

# What a solver has to predict, per task type: the propose prompts' difficulty bullet names one.
_DIRECTION = {
    TaskType.DEDUCTION: "the output from the code and the input",
    TaskType.ABDUCTION: "your input from the code and the output",
}


def _fence(tag: str, body: str) -> str:
    """A fenced block; trailing newlines of the body are dropped so the fence closes cleanly."""
    return f"```{tag}\n{body.rstrip(chr(10))}\n```"


def _difficulty_direction(task_type: TaskType, swap: bool) -> str:
    """The direction named by the difficulty bullet.

    The original prompts name the other task's direction (deduction asks for a hard-to-guess
    input, abduction for a hard-to-guess output); `swap=True` keeps that for faithful
    replication (docs/algorithm.md §3.2, §3.5).
    """
    if swap:
        other = TaskType.ABDUCTION if task_type is TaskType.DEDUCTION else TaskType.DEDUCTION
        return _DIRECTION[other]
    return _DIRECTION[task_type]


def _reference_blocks(references: Sequence[Triplet]) -> str:
    """The `<snippet_i>` blocks: program, input and output fences, outputs exactly as stored."""
    blocks = []
    for i, ref in enumerate(references):
        blocks.append(
            f"<snippet_{i}>\n"
            f"{_fence('python', ref.program)}\n\n"
            f"{_fence('input', ref.input)}\n\n"
            f"{_fence('output', ref.output)}\n"
            f"</snippet_{i}>"
        )
    return "\n\n".join(blocks)


def _io_propose_prompt(
    task_type: TaskType,
    references: Sequence[Triplet],
    banned_imports: Sequence[str],
    swap_difficulty_criteria: bool,
) -> str:
    """Shared body of the deduction and abduction propose prompts, which differ in two places."""
    if task_type is TaskType.DEDUCTION:
        hidden, shown = "output", "the code and your input"
        goal = "working out its output from a given input"
    else:
        hidden, shown = "input", "the code and the output it produces"
        goal = "recovering one possible input from a given output"
    banned = ", ".join(banned_imports)
    sections = [
        "## Task: Write a New Python Code Snippet (custom classes are allowed and belong at the "
        "top of the snippet) Together With One Matching Input",
        f"Taking the reference snippets below as examples, design a new and distinctive Python "
        f"code snippet for which {goal} calls for deep algorithmic reasoning. You submit a code "
        f"snippet and one test input; the input is passed to the code to compute the output. A "
        f"test subject will then see {shown} and must determine the {hidden}, so the exercise "
        f"works like an I.Q. test.",
        "### Code Requirements:\n" + "\n".join(_CODE_REQUIREMENTS),
        "### Input Requirements:\n"
        "- Give exactly one test input for your code.\n" + _ARGUMENT_RULES,
        "### Formatting:\n"
        "- Write your code in a ```python``` block:\n"
        + _fence("python", "def f(...):\n    # your code here\n    return ...")
        + "\n- Write your input in an ```input``` block:\n"
        + _fence("input", "arg1, arg2, ..."),
        "### Example Format:\n"
        + _fence("python", _EXAMPLE_STUB)
        + "\n\n"
        + _fence("input", _EXAMPLE_INPUT),
        "### Evaluation Criteria:\n"
        "- Executability: the code must run without errors on your input.\n"
        f"- Difficulty: it should be hard to predict "
        f"{_difficulty_direction(task_type, swap_difficulty_criteria)}. {_COMPLEXITY_HINT}\n"
        "- Creativity: the code should be clearly different from the reference snippets.\n"
        f"- Restricted usage: you may not use these words in any form, even in comments: {banned}",
        "First lay out a plan: explain what makes your snippet challenging, how it differs from "
        "the references and where its creativity lies. Then write the final code and its input.",
    ]
    if references:
        sections.append(f"{REFERENCES_HEADING}\n\n{_reference_blocks(references)}")
    return "\n\n".join(sections) + "\n"


def deduction_propose_prompt(
    references: Sequence[Triplet],
    banned_imports: Sequence[str],
    swap_difficulty_criteria: bool = True,
) -> str:
    """Ask for a program plus one input whose output a solver will have to deduce."""
    return _io_propose_prompt(
        TaskType.DEDUCTION, references, banned_imports, swap_difficulty_criteria
    )


def abduction_propose_prompt(
    references: Sequence[Triplet],
    banned_imports: Sequence[str],
    swap_difficulty_criteria: bool = True,
) -> str:
    """Ask for a program plus one input that a solver will have to recover from the output."""
    return _io_propose_prompt(
        TaskType.ABDUCTION, references, banned_imports, swap_difficulty_criteria
    )


def induction_propose_prompt(program: str, num_inputs: int) -> str:
    """Ask for `num_inputs` inputs to a given program plus a message; no references, no ban list.

    The proposer writes no code: the program is shown with the call hint so the inputs are
    argument lists for `f` (docs/algorithm.md §3.3).
    """
    sections = [
        f"## Task: Give {num_inputs} Inputs for the Code Snippet Below That Produce Varied "
        f"Outputs, Plus a Message About the Snippet",
        f"Come up with {num_inputs} inputs for the code snippet below so that the outputs they "
        f"produce are as varied as possible. A test subject will be shown some of these inputs "
        f"together with their outputs and must work out the function from them. You may also "
        f"leave the test subject a message about the snippet.",
        "### Input Requirements:\n"
        f"- Provide {num_inputs} valid inputs for the code snippet.\n"
        + _ARGUMENT_RULES
        + "\n- Write each input in its own ```input``` block.",
        "### Message Requirements:\n"
        "- Write the message in a ```message``` block.\n"
        "- It may take any form, for example a coding question or a plain-language description "
        "of what the function does.\n"
        "- It must not contain the code itself.",
        "### Formatting:\n"
        "- Each input in its own block:\n"
        + _fence("input", "arg1, arg2, ...")
        + "\n- The message:\n"
        + _fence("message", "your message here"),
        "### Example Format:\n"
        + _fence("input", _EXAMPLE_INPUT)
        + "\n\n"
        + _fence("input", _EXAMPLE_INPUT_2)
        + "\n\n"
        + _fence("message", "Find what the function computes from a name and a record."),
        "### Evaluation Criteria:\n"
        "- Executability: the code must run without errors on every input.\n"
        "- Coverage: together, the inputs and outputs should span the input space well enough "
        "that the function can be deduced from them.\n"
        "- Creativity: the inputs should differ clearly from one another.\n"
        "- The whole set should be challenging to solve, but not impossible.",
        "First lay out a plan for choosing the inputs and the message, then write them. Remember "
        "to put each input in its own ```input``` block and the message in a ```message``` block.",
        "### Code Snippet:\n" + _fence("python", program.rstrip("\n") + "\n" + CALL_HINT),
    ]
    return "\n\n".join(sections) + "\n"


def deduction_solve_prompt(program: str, input: str) -> str:
    """Ask for the output of `f(input)`, answered in an output block."""
    sections = [
        "# Task: Work Out the Output of a Python Code Snippet for a Given Input",
        "Reason through the code step by step and put the output you predict inside "
        "```output``` tags. Quote string outputs, and write several returned values as a tuple.",
        "# Code Snippet:\n" + _fence("python", program),
        "# Input:\n" + _fence("input", input),
        "# Example Output:\n" + _fence("output", _EXAMPLE_OUTPUT),
    ]
    return "\n\n".join(sections) + "\n"


def abduction_solve_prompt(program: str, output: str) -> str:
    """Ask for any input that makes `f` return the given output, answered in an input block."""
    sections = [
        "# Task: Find One Input to a Python Code Snippet That Produces the Given Output",
        "Reason through the code step by step and put one input that produces the output inside "
        "```input``` tags. Quote string arguments and separate multiple arguments with commas.",
        "# Code Snippet:\n" + _fence("python", program),
        "# Output:\n" + _fence("output", output),
        "# Output Format:\n" + _fence("input", "arg1, arg2, ..."),
        "# Example Output:\n" + _fence("input", _EXAMPLE_INPUT),
    ]
    return "\n\n".join(sections) + "\n"


def induction_solve_prompt(pairs: Sequence[tuple[str, str]], message: str) -> str:
    """Ask for a program `f` reproducing the shown pairs; it is scored on hidden pairs."""
    requirements = [b for b in _CODE_REQUIREMENTS if b != _STATE_TRACKING_BULLET]
    pair_blocks = "\n\n".join(
        f"{_fence(f'input_{k}', inp)}\n{_fence(f'output_{k}', out)}"
        for k, (inp, out) in enumerate(pairs)
    )
    sections = [
        "# Task: Recover the Function That Maps the Inputs to the Outputs",
        "Using the input and output pairs and the message below, write a general Python code "
        "snippet that would also turn further, unseen inputs into their correct outputs. Put "
        "your final code inside ```python``` tags. Check your function against every pair, one "
        "by one, and revise it if any pair does not match.",
        "# Code Requirements:\n" + "\n".join(requirements),
        "# Input and Output Pairs:\n" + pair_blocks,
        "# Message:\n" + _fence("message", message),
        "# Example Output:\n" + _fence("python", "def f(a):\n    return a"),
        "Remember: the entry function must be named `f()`.",
    ]
    return "\n\n".join(sections) + "\n"


def solve_prompt_for(task_type: TaskType, entry: Triplet | InductionTask, profile: str = "paper") -> str:
    """The solve question for a buffer entry: what the solver sees of it depends on the type.

    `profile` is `tasks.prompt_profile`: `paper` (these texts) or `small` (azr.selfplay.prompts.small).
    """
    small = _check_profile(profile) == "small"
    if task_type is TaskType.INDUCTION:
        if not isinstance(entry, InductionTask):
            raise TypeError(f"induction solve needs an InductionTask, got {type(entry).__name__}")
        build = prompts_small.induction_solve_prompt if small else induction_solve_prompt
        return build(entry.shown_pairs, entry.message)
    if not isinstance(entry, Triplet):
        raise TypeError(f"{task_type.value} solve needs a Triplet, got {type(entry).__name__}")
    if task_type is TaskType.DEDUCTION:
        return (prompts_small.deduction_solve_prompt if small else deduction_solve_prompt)(entry.program, entry.input)
    if task_type is TaskType.ABDUCTION:
        return (prompts_small.abduction_solve_prompt if small else abduction_solve_prompt)(entry.program, entry.output)
    raise ValueError(f"unknown task type {task_type!r}")


def _check_profile(profile: str) -> str:
    if profile not in PROMPT_PROFILES:
        raise ValueError(f"unknown prompt profile {profile!r}; valid profiles are: {', '.join(PROMPT_PROFILES)}")
    return profile


def propose_prompt_for(
    task_type: TaskType,
    references_or_program: Sequence[Triplet] | str | Triplet | InductionTask,
    config: TaskConfig,
) -> str:
    """The propose question for a task type, with the knobs taken from the task config.

    Deduction/abduction take the sampled references, cut to `config.references` so that
    `references: 0` is the no-reference ablation. Induction takes the one program to write
    inputs for, as source text or as the buffer entry holding it.
    """
    small = _check_profile(config.prompt_profile) == "small"
    if task_type is TaskType.INDUCTION:
        program = references_or_program
        if isinstance(program, (Triplet, InductionTask)):
            program = program.program
        if not isinstance(program, str):
            raise TypeError("induction propose needs a program (str, Triplet or InductionTask)")
        build = prompts_small.induction_propose_prompt if small else induction_propose_prompt
        return build(program, config.induction_inputs)
    if isinstance(references_or_program, (str, Triplet, InductionTask)):
        raise TypeError(f"{task_type.value} propose needs a sequence of reference Triplets")
    references = list(references_or_program)[: config.references]
    if small and task_type in (TaskType.DEDUCTION, TaskType.ABDUCTION):
        return prompts_small.io_propose_prompt(task_type, references, config.banned_imports)
    if task_type is TaskType.DEDUCTION:
        builder = deduction_propose_prompt
    elif task_type is TaskType.ABDUCTION:
        builder = abduction_propose_prompt
    else:
        raise ValueError(f"unknown task type {task_type!r}")
    return builder(references, config.banned_imports, config.swap_difficulty_criteria)
