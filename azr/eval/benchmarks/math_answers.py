"""Math benchmarks: the public files the official repo's math harness reads, and the answers
read out of them and out of responses.

Files (one JSON object a line, `data/<name>/test.jsonl` in the harness): the question is
`problem` or `question`; the gold answer is `answer` (AIME24, AIME25, AMC23, MATH500), the last
`\\boxed{}` of `solution` (Minerva Math), or `final_answer`, a list of LaTeX strings in `$...$`
(OlympiadBench, where `is_multiple_answer` marks problems that ask for several answers).

A response's answer is read as the paper's harness does for AZR models: the `<answer>` block
when there is one, then the last `\\boxed{}` inside it (the whole block when it has none);
otherwise the last `\\boxed{}` of the response; otherwise nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from azr.eval.benchmarks.ids import row_id
from azr.eval.benchmarks.problems import MathProblem

# Where the official AZR repository keeps the harness' files; `{name}` is the folder name.
MATH_DATA_URL = "https://raw.githubusercontent.com/LeapLabTHU/Absolute-Zero-Reasoner/master/evaluation/math_eval/data/{name}/test.jsonl"
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_QUESTION_FIELDS = ("problem", "question")


def _braced(text: str, start: int) -> str | None:
    """The content of the brace group opening at text[start] ('{'), nested braces balanced."""
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "{}":
            continue
        if char == "{" and (index == 0 or text[index - 1] != "\\"):
            depth += 1
        elif char == "}" and (index == 0 or text[index - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : index]
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`)."""
    for match in reversed(list(_BOXED.finditer(text))):
        end = match.end()
        if end < len(text) and text[end] == "{":
            content = _braced(text, end)
            if content is not None:
                return content.strip()
        elif match.group(0).endswith(" ") or match.group(0).endswith("\t"):
            token = re.match(r"[^\s$]+", text[end:])
            if token:
                return token.group(0).strip()
    return None


def extract_math_answer(response: str) -> str:
    """The answer a response gives ('' when it gives none); see the module docstring."""
    if _ANSWER_OPEN in response:
        block = response.rsplit(_ANSWER_OPEN, 1)[1].split(_ANSWER_CLOSE, 1)[0]
        boxed = last_boxed(block)
        return boxed if boxed is not None else block.strip()
    boxed = last_boxed(response)
    return boxed if boxed is not None else ""


def split_answers(text: str) -> list[str]:
    """Top-level comma-separated parts ('1, (2, 3)' -> ['1', '(2, 3)']), for multi-answer checks."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p.strip("$ ") for p in parts if p.strip("$ ")]


def _answer_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, str)):
        return str(value).strip()
    return None


def math_problem(benchmark: str) -> Callable[[str, dict[str, Any], int], MathProblem | str]:
    """A row-to-problem function for one of the six math benchmarks."""

    def make(origin: str, row: dict[str, Any], index: int) -> MathProblem | str:
        question = next((row[k] for k in _QUESTION_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None)
        if question is None:
            return f"{origin}: no problem or question text"
        multiple, unit = False, ""
        if benchmark == "minerva-math":
            solution = row.get("solution")
            gold = last_boxed(solution) if isinstance(solution, str) else None
            if gold is None:
                return f"{origin}: the solution has no \\boxed{{}} answer"
            answers: tuple[str, ...] = (gold,)
        elif benchmark == "olympiadbench":
            final = row.get("final_answer")
            if not (isinstance(final, list) and final and all(isinstance(a, str) for a in final)):
                return f"{origin}: final_answer must be a non-empty list of strings"
            answers = tuple(a.strip().strip("$").strip() for a in final)
            multiple = bool(row.get("is_multiple_answer")) or len(answers) > 1
            unit = str(row.get("unit") or "")
        else:
            gold = _answer_text(row.get("answer"))
            if not gold:
                return f"{origin}: missing answer"
            answers = (gold,)
        return MathProblem(row_id(row, index), question.strip(), answers, multiple, unit)

    return make
