"""Questions for the paper's benchmarks (code generation and math), in our own words, and how
the answer is read back.

`azr` style (the model's wrapper around the question; docs/algorithm.md §11.1: the R1 wrapper and a
"# Task" question, answered inside <answer> with a python block for code, a \\boxed{} answer for
math). `plain` style: for base models, the benchmark's own prompt continued as text (EvalPlus),
or the question with the instruction and no wrapper.
"""

from __future__ import annotations

from azr.eval.benchmarks.math_answers import extract_math_answer
from azr.eval.benchmarks.problems import LiveCodeProblem, MathProblem, PlusProblem
from azr.selfplay.parsing import fences, parse_generation

PaperProblem = PlusProblem | LiveCodeProblem | MathProblem

_BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
MBPP_STOPS: tuple[str, ...] = ("\nif __name__", "\nprint(", "\nassert ", "\n```")


def _fence(tag: str, body: str) -> str:
    return f"```{tag}\n{body.rstrip(chr(10))}\n```"


def plus_question(problem: PlusProblem) -> str:
    """HumanEval+ asks to complete a function stub; MBPP+ describes a function and shows a test."""
    if problem.dataset == "humaneval":
        task = ("Read the signature and the docstring, reason step by step about what the function has to do, "
                "and then write the whole function (its signature, body and any imports it needs) inside "
                "```python``` tags. Keep the function's name.")
        body = "# Function to Complete:\n" + _fence("python", problem.prompt)
    else:
        task = (f"Read the description and the example test, reason step by step, and then write a self-contained "
                f"Python function named `{problem.entry_point}` (with any imports it needs) inside ```python``` tags.")
        body = "# Problem:\n" + problem.prompt.strip().strip('"').strip()
    return "\n\n".join(["# Task: Write a Correct Python Function", task, body]) + "\n"


def livecode_question(problem: LiveCodeProblem) -> str:
    """The LiveCodeBench question with the starter code (LeetCode) or the stdin/stdout rule."""
    parts = [
        "# Task: Solve the Programming Problem Below",
        "Reason step by step about the problem, then give a correct and efficient Python 3 program that meets "
        "the specification and passes all of its tests, inside ```python``` tags.",
        "# Problem:\n" + problem.question.strip(),
    ]
    if problem.starter_code.strip():
        parts.append("Complete this starter code (keep the class and method names):\n" + _fence("python", problem.starter_code))
    else:
        parts.append("Your program reads its input from standard input and writes the answer to standard output; "
                     "do not just print the answers of the examples.")
    return "\n\n".join(parts) + "\n"


def math_question(problem: MathProblem) -> str:
    return f"{problem.question.strip()}\n\n{_BOXED_INSTRUCTION}"


def paper_question(problem: PaperProblem) -> str:
    """The unwrapped question of the azr style."""
    if isinstance(problem, PlusProblem):
        return plus_question(problem)
    if isinstance(problem, LiveCodeProblem):
        return livecode_question(problem)
    return math_question(problem)


def paper_plain_prompt(problem: PaperProblem) -> str:
    if isinstance(problem, PlusProblem):
        return problem.prompt
    if isinstance(problem, LiveCodeProblem):
        return livecode_question(problem) + "\n```python\n"
    return f"Problem: {problem.question.strip()}\n{_BOXED_INSTRUCTION}\nSolution:"


def last_code_block(text: str) -> str | None:
    """The last fenced block tagged python (or untagged) in `text`."""
    blocks = [b for b in fences(text) if b.tag in ("python", "py", "python3", "")]
    return blocks[-1].body.strip("\n") if blocks else None


def extract_paper_answer(problem: PaperProblem, response: str, style: str, prefix: str) -> tuple[str, bool | None]:
    """(prediction, think/answer format) for one response."""
    if isinstance(problem, MathProblem):
        format_ok = parse_generation(response, prefix).format_ok if style == "azr" else None
        return extract_math_answer(response), format_ok
    if style == "plain":
        if isinstance(problem, LiveCodeProblem):
            return (last_code_block(response) or response.split("```", 1)[0]).strip("\n"), None
        if last_code_block(response) is not None:
            return last_code_block(response) or "", None
        from azr.eval.prompting.azr_prompts import truncate_at_stops

        stops = MBPP_STOPS if problem.dataset == "mbpp" else None
        return (truncate_at_stops(response, stops) if stops else truncate_at_stops(response)), None
    generation = parse_generation(response, prefix)
    code = last_code_block(generation.answer) if generation.has_answer_tag else None
    if code is None:
        code = last_code_block(response)
    return code or "", generation.format_ok
