"""What the model is asked, and how its prediction is read back.

Two styles. `azr`: the solve prompts of training (deduction for output prediction, abduction for
input prediction) inside the run's wrapper, read back by the training parser, so evaluation
measures what training teaches (docs/algorithm.md §11.3). HumanEval gets a question in the same shape,
answered in a python block. `plain`: a benchmark prompt for base models with no wrapper: an
assertion to complete between [ANSWER] tags for CRUXEval, the bare function prompt (completed
as text, cut at the usual stop sequences) for HumanEval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from azr.eval.benchmarks.problems import CodeProblem, LiveCodeProblem, MathProblem, PlusProblem, Problem
from azr.eval.prompting.paper_prompts import extract_paper_answer, paper_plain_prompt, paper_question
from azr.selfplay.parsing import ParseFailure, parse_generation, parse_solution
from azr.selfplay.prompts.paper import abduction_solve_prompt, deduction_solve_prompt
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import PromptWrapper

PromptStyle = Literal["azr", "plain"]
PROMPT_STYLES: tuple[str, ...] = ("azr", "plain")

# Where a plain completion of a HumanEval prompt stops being the function body (the stop
# sequences of the Codex paper): a new top-level statement, comment or definition.
HUMANEVAL_STOPS: tuple[str, ...] = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\nassert ")

_ANSWER_OPEN, _ANSWER_CLOSE = "[ANSWER]", "[/ANSWER]"

_PLAIN_OUTPUT = """\
Below is a Python function followed by an assertion that calls it. Replace ?? with the exact \
value the call returns, written as a Python literal (no expressions and no calls of f), and give \
the completed assertion between [ANSWER] and [/ANSWER].

[PYTHON]
def f(words):
    return sorted(words, key=len)[-1].upper()
assert f(['ox', 'heron', 'cat']) == ??
[/PYTHON]
[ANSWER]
assert f(['ox', 'heron', 'cat']) == 'HERON'
[/ANSWER]

[PYTHON]
{code}
assert f({input}) == ??
[/PYTHON]
[ANSWER]
"""

_PLAIN_INPUT = """\
Below is a Python function followed by an assertion about its result. Replace ?? with any input \
for which f returns that value, and give the completed assertion between [ANSWER] and [/ANSWER].

[PYTHON]
def f(n, step):
    return list(range(0, n, step))
assert f(??) == [0, 3, 6]
[/PYTHON]
[ANSWER]
assert f(9, 3) == [0, 3, 6]
[/ANSWER]

[PYTHON]
{code}
assert f(??) == {output}
[/PYTHON]
[ANSWER]
"""


@dataclass(frozen=True)
class Extracted:
    prediction: str
    format_ok: bool | None  # the think/answer format of the azr style; None for plain


def _fence(tag: str, body: str) -> str:
    return f"```{tag}\n{body.rstrip(chr(10))}\n```"


def humaneval_question(prompt: str) -> str:
    """HumanEval in the shape of the training solve prompts: the answer is a python block."""
    sections = [
        "# Task: Complete the Python Function Below",
        "Read the signature and the docstring, reason step by step about what the function has "
        "to do, and then write the whole function (its signature, body and any imports it needs) "
        "inside ```python``` tags. Keep the function's name.",
        "# Function to Complete:\n" + _fence("python", prompt),
    ]
    return "\n\n".join(sections) + "\n"


def azr_question(problem: Problem) -> str:
    """The unwrapped question of the azr style."""
    if isinstance(problem, (PlusProblem, LiveCodeProblem, MathProblem)):
        return paper_question(problem)
    if isinstance(problem, CodeProblem):
        return humaneval_question(problem.prompt)
    if problem.task is TaskType.DEDUCTION:
        return deduction_solve_prompt(problem.code, problem.input)
    return abduction_solve_prompt(problem.code, problem.output)


def plain_prompt(problem: Problem) -> str:
    """The plain benchmark prompt: plain text, no wrapper, for base models."""
    if isinstance(problem, (PlusProblem, LiveCodeProblem, MathProblem)):
        return paper_plain_prompt(problem)
    if isinstance(problem, CodeProblem):
        return problem.prompt
    template = _PLAIN_OUTPUT if problem.task is TaskType.DEDUCTION else _PLAIN_INPUT
    return template.format(code=problem.code.rstrip("\n"), input=problem.input, output=problem.output)


def build_prompt(problem: Problem, style: PromptStyle, wrapper: PromptWrapper | None) -> str:
    if style == "plain":
        return plain_prompt(problem)
    if style != "azr":
        raise ValueError(f"unknown prompt style {style!r}; choose one of: {', '.join(PROMPT_STYLES)}")
    if wrapper is None:
        raise ValueError("the azr prompt style needs the model's prompt wrapper")
    return wrapper.wrap(azr_question(problem))


def build_prompts(problems: Sequence[Problem], style: PromptStyle, wrapper: PromptWrapper | None) -> list[str]:
    return [build_prompt(problem, style, wrapper) for problem in problems]


def truncate_at_stops(text: str, stops: Sequence[str] = HUMANEVAL_STOPS) -> str:
    """The text up to the first stop sequence."""
    cut = min((i for i in (text.find(stop) for stop in stops) if i != -1), default=len(text))
    return text[:cut]


def _plain_answer(response: str) -> str:
    """The text between the prompt's open [ANSWER] and the first [/ANSWER]."""
    text = response.split(_ANSWER_CLOSE, 1)[0]
    if _ANSWER_OPEN in text:  # the model opened a second answer block: take its content
        text = text.rsplit(_ANSWER_OPEN, 1)[1]
    return text.strip()


def extract_prediction(problem: Problem, response: str, style: PromptStyle, prefix: str = "<think>") -> Extracted:
    """The prediction a response makes for `problem`, as the scorer expects it.

    For reasoning problems the plain style returns the completed assertion; scoring reduces
    an assertion to the predicted value (see `azr.eval.scoring.reasoning.normalise_prediction`).
    """
    if isinstance(problem, (PlusProblem, LiveCodeProblem, MathProblem)):
        return Extracted(*extract_paper_answer(problem, response, style, prefix))
    if style == "plain":
        if isinstance(problem, CodeProblem):
            return Extracted(truncate_at_stops(response), None)
        return Extracted(_plain_answer(response), None)
    generation = parse_generation(response, prefix)
    if isinstance(problem, CodeProblem):
        code = parse_solution(TaskType.INDUCTION, generation.answer)
        return Extracted("" if isinstance(code, ParseFailure) else code, generation.format_ok)
    answer = parse_solution(problem.task, generation.answer)
    return Extracted(answer if isinstance(answer, str) else "", generation.format_ok)
