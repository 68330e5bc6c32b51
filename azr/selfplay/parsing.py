"""Reading model responses (docs/algorithm.md §4): format score, answer extraction, and the
role-specific parsing of proposals and solutions.

Nothing here executes model text; `ast.parse` only parses. Every failure carries a `Reason`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

from azr.selfplay.static_checks import AST_ERRORS
from azr.selfplay.rejection import Reason
from azr.selfplay.task_types import TaskType

THINK_PREFIX = "<think>"
_FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_FENCE = re.compile(r"```([^\n`]*)\n?(.*?)```", re.DOTALL)
_TAG = re.compile(r"\s*([A-Za-z_][\w-]*)\s*")
_CODE_TAGS = frozenset({"", "python", "py", "python3"})
_ORIGINAL_CODE_TAGS = frozenset({"", "python"})  # the original solver parser: an optional `python` tag
_DEF = re.compile(r"^[ \t]*def[ \t]+([A-Za-z_]\w*)[ \t]*\(", re.MULTILINE)
_IMPORT_LINE = re.compile(r"^[ \t]*(?:import[ \t]+\S.*|from[ \t]+\S+[ \t]+import[ \t]+.+)$", re.M)


@dataclass(frozen=True)
class Generation:
    """A response seen the way the reward functions see it."""

    text: str  # the isolated generation, starting with the prompt's <think>
    format_ok: bool
    has_answer_tag: bool
    answer: str  # content of the last <answer> block ('' when there is none)


@dataclass(frozen=True)
class Fence:
    tag: str  # lower-cased info string ('' when absent)
    body: str


@dataclass(frozen=True)
class ProgramProposal:
    """A parsed deduction/abduction proposal: the program (entry renamed to f) and one input."""

    program: str
    input: str
    imports: tuple[str, ...]


@dataclass(frozen=True)
class InductionProposal:
    inputs: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class ParseFailure:
    reason: Reason
    detail: str = ""


def parse_generation(response: str, prefix: str = THINK_PREFIX) -> Generation:
    """Isolate the generation, score its think/answer format and extract the answer.

    The prompt ends with `prefix` (`<think>`), so the generation is prefix + response. As in
    the original, text from a model-written `Assistant:` on is not part of the generation.
    """
    text = (prefix + response).split("Assistant:", 1)[0]
    text = text.strip().strip('"').strip("'")
    start = text.rfind("<answer>")
    if start == -1:
        answer = ""
    else:
        rest = text[start + len("<answer>") :]
        end = rest.find("</answer>")
        answer = (rest if end == -1 else rest[:end]).strip()
    return Generation(
        text=text,
        format_ok=_FORMAT.match(text) is not None,
        has_answer_tag=start != -1,
        answer=answer,
    )


def fences(text: str) -> list[Fence]:
    """All fenced blocks in order. The info string counts as a tag only if it is one word."""
    blocks = []
    for match in _FENCE.finditer(text):
        info, body = match.group(1), match.group(2)
        tag_match = _TAG.fullmatch(info)
        if tag_match or not info.strip():
            tag = tag_match.group(1).lower() if tag_match else ""
        else:  # code started on the fence line itself, e.g. ```def f(a):
            tag, body = "", info + "\n" + body
        blocks.append(Fence(tag=tag, body=body.strip("\n")))
    return blocks


def _first_tagged(blocks: list[Fence], tag: str) -> str | None:
    return next((b.body.strip() for b in blocks if b.tag == tag), None)


def _last_tagged(blocks: list[Fence], tag: str) -> str | None:
    return next((b.body.strip() for b in reversed(blocks) if b.tag == tag), None)


def _text_after_heading(text: str, heading: str, same_line: bool = False) -> str | None:
    """Text after the last `# Input:`-style heading, up to the next fence or end of line.

    `same_line` (the original solver parser): only what follows the heading on its own line;
    otherwise a heading alone on its line takes the next line.
    """
    index = text.rfind(heading)
    if index == -1:
        return None
    rest = text[index + len(heading) :].lstrip(" \t")
    rest = rest.split("```", 1)[0]
    line = (rest if same_line else rest.strip("\n")).split("\n", 1)[0].strip()
    return line or None


def collect_imports(code: str) -> tuple[str, ...]:
    """Every import statement anywhere in the program, re-serialised one per line."""
    try:
        tree = ast.parse(code)
    except AST_ERRORS:
        return tuple(line.strip() for line in _IMPORT_LINE.findall(code))
    return tuple(
        ast.unparse(node) for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
    )


def rename_entry_function(
    code: str, names: list[str], policy: Literal["not_first", "any_last"]
) -> str:
    """Rename the entry function to `f` at its definition and every call site."""
    if policy == "any_last" and "f" in names:
        return code
    target = names[0] if policy == "not_first" else names[-1]
    if target == "f":
        return code
    # `\s*` as the original: `def solve (x):` and `solve (3)` are renamed too.
    return re.sub(rf"\b{re.escape(target)}\s*\(", "f(", code)


def clean_seed_program(code: str) -> str:
    """The seeding parse options (docs/algorithm.md §4.2): comments and docstrings removed, and only
    imports, functions and classes kept at the top level (`remove_after_return`).

    Parsed, never run; a program that does not parse is returned unchanged (validation then
    rejects it).
    """
    try:
        tree = ast.parse(code)
    except AST_ERRORS:
        return code
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def parse_program_proposal(
    answer: str,
    *,
    reject_multiple_functions: bool = True,
    rename_function: Literal["not_first", "any_last"] = "not_first",
    code_location: Literal["first", "last"] = "first",
    seeding: bool = False,
) -> ProgramProposal | ParseFailure:
    """Program + one input, as written by a deduction or abduction proposer.

    The program is the first (or last) fenced block; a block tagged otherwise (e.g. an input
    block written first) is not code, as in the original where it then failed the def check.
    `seeding` applies the seeding parse options (`clean_seed_program`).
    """
    if not answer:
        return ParseFailure(Reason.NO_ANSWER_TAG, "no <answer> content")
    blocks = fences(answer)
    if not blocks:
        return ParseFailure(Reason.NO_CODE_BLOCK, "no fenced block in the answer")
    chosen = blocks[0] if code_location == "first" else blocks[-1]
    if chosen.tag not in _CODE_TAGS:
        return ParseFailure(Reason.NO_CODE_BLOCK, f"the {code_location} block is tagged {chosen.tag!r}")
    code = chosen.body
    names = _DEF.findall(code)
    if not names:
        return ParseFailure(Reason.NO_DEF, "the code block defines no function")
    if len(names) > 1 and reject_multiple_functions:
        return ParseFailure(Reason.MULTI_DEF, f"{len(names)} defs: {', '.join(names)}")
    input_text = _first_tagged(blocks, "input")
    if input_text is None:
        input_text = _text_after_heading(answer, "# Input:")
    if not input_text:
        return ParseFailure(Reason.NO_INPUT_BLOCK, "no ```input block and no '# Input:' line")
    program = rename_entry_function(code, names, rename_function)
    if seeding:
        program = clean_seed_program(program)
    return ProgramProposal(program=program, input=input_text, imports=collect_imports(program))


def parse_induction_proposal(answer: str, num_inputs: int) -> InductionProposal | ParseFailure:
    """At least `num_inputs` input blocks (the last ones are used) and a message."""
    if not answer:
        return ParseFailure(Reason.NO_ANSWER_TAG, "no <answer> content")
    blocks = fences(answer)
    inputs = [b.body.strip() for b in blocks if b.tag == "input"]
    if len(inputs) < num_inputs:
        return ParseFailure(
            Reason.TOO_FEW_INPUTS, f"{len(inputs)} input blocks, {num_inputs} needed"
        )
    message = _first_tagged(blocks, "message")
    if message is None:
        tagged = re.search(r"<message>(.*?)</message>", answer, re.DOTALL)
        message = tagged.group(1).strip() if tagged else _text_after_heading(answer, "# Message:")
    if not message:
        return ParseFailure(Reason.NO_MESSAGE, "no ```message block, <message> tag or '# Message:'")
    return InductionProposal(inputs=tuple(inputs[-num_inputs:]), message=message)


def _fallback_value(answer: str, kind: Literal["input", "output"], strict: bool = True) -> str:
    """The solver's input/output: last fenced block of that kind, then looser forms."""
    block = _last_tagged(fences(answer), kind)
    if block is not None:
        return block
    heading = _text_after_heading(answer, f"# {kind.capitalize()}:", same_line=strict)
    if heading is not None:
        return heading
    calls = re.findall(rf"\b{kind}\((.*)\)", answer)
    if calls:
        return calls[-1].strip()
    tagged = re.findall(rf"<{kind}>(.*?)(?:</{kind}>|$)", answer, re.DOTALL)
    if tagged:
        return tagged[-1].strip()
    phrase = re.findall(rf"the {kind} is:?\s*(.+)", answer, re.IGNORECASE)
    if phrase:
        return phrase[-1].strip().rstrip(".").strip()
    return answer.strip()


def parse_solution(task_type: TaskType, answer: str, strict: bool = True) -> str | ParseFailure:
    """The solver's answer: an input (abduction), an output (deduction) or a program (induction).

    Deduction and abduction never fail here (their format depends only on the think/answer
    structure); induction fails without a code block, which forces format score 0. `strict`
    reads answers as the original did (`reward.solver_parsing: original`): a program's fence
    has no tag or `python`, and a `# Input:` heading counts only with its value on its line.
    """
    if task_type is TaskType.ABDUCTION:
        return _fallback_value(answer, "input", strict)
    if task_type is TaskType.DEDUCTION:
        return _fallback_value(answer, "output", strict)
    tags = _ORIGINAL_CODE_TAGS if strict else _CODE_TAGS
    code = next((b.body for b in reversed(fences(answer)) if b.tag in tags), None)
    if code is None or not code.strip():
        return ParseFailure(Reason.NO_CODE_BLOCK, "no python block in the answer")
    return code
