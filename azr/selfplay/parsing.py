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


def answer_of_whole_response(response: str) -> str:
    """The content of the last <answer> of the whole response, as the original read Monte-Carlo
    answers (it decoded the response alone, so a model-written `Assistant:` does not cut it);
    '' without an <answer> tag."""
    if "<answer>" not in response:
        return ""
    return response.split("<answer>")[-1].split("</answer>")[0].strip()


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


def _without_blank_lines(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.split("\n") if line.strip())


def clean_seed_program(code: str) -> str:
    """The seeding parse options (docs/algorithm.md §4.2), as the original applies them in turn:
    comments and every leading string statement of the module, each function and each class
    removed, then only imports, functions and classes kept at the top level
    (`remove_after_return`); blank lines dropped after each. A step whose input does not parse
    leaves it unchanged. Parsed, never run.
    """
    try:
        tree = ast.parse(code)
    except AST_ERRORS:
        return code
    scopes = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in ast.walk(tree):
        if isinstance(node, scopes):
            while node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                    and isinstance(node.body[0].value.value, str):
                node.body.pop(0)
    code = _without_blank_lines(ast.unparse(tree))
    try:
        tree = ast.parse(code)
    except AST_ERRORS:
        return code
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    tree.body = [node for node in tree.body if isinstance(node, keep)]
    return _without_blank_lines(ast.unparse(tree))


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
    imports = collect_imports(program)  # before cleaning, as the original
    if seeding:
        program = clean_seed_program(program)
    return ProgramProposal(program=program, input=input_text, imports=imports)


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


# ---------------------------------------------------------------- the original's expressions
# The original read answers with these regular expressions (case-insensitive, `.` matching
# newlines); `original` parsing uses them as they are, so that every odd answer is read the same.
_ORIGINAL_FLAGS = re.DOTALL | re.IGNORECASE
_ORIGINAL_CODE = re.compile(r"```(?:python\s*)?\n?(.*?)\n?```", _ORIGINAL_FLAGS)


def _original_block(kind: str) -> re.Pattern[str]:
    return re.compile(rf"```{kind}\s*\n?(.*?)\n?```", _ORIGINAL_FLAGS)


def _original_heading(kind: str) -> re.Pattern[str]:
    """`# Input:` and everything after it up to the next fence or the end of the text."""
    return re.compile(rf"# {kind}:\s*(.*?)(?=\n```|$)", _ORIGINAL_FLAGS)


def _original_solver_value(answer: str, kind: Literal["input", "output"]) -> str:
    """The solver's input/output as the original read it: the last match of the first pattern
    that matches at all, unstripped (quotes and spacing kept), else the whole answer."""
    patterns = (
        _original_block(kind),
        _original_heading(kind.capitalize()),
        re.compile(rf"{kind}\s*\((.*?)\)", _ORIGINAL_FLAGS),
        re.compile(rf"<{kind}>\s*(.*?)(?:</{kind}>|\s*$)", _ORIGINAL_FLAGS),
        re.compile(rf"the {kind} is\s*(.*?)\.?$", _ORIGINAL_FLAGS),
    )
    for pattern in patterns:
        matches = list(pattern.finditer(answer))
        if matches:
            return matches[-1].group(1)
    return answer


def parse_program_proposal_original(
    text: str,
    *,
    reject_multiple_functions: bool = True,
    rename_function: Literal["not_first", "any_last"] = "not_first",
    code_location: Literal["first", "last"] = "first",
    seeding: bool = False,
) -> ProgramProposal | ParseFailure:
    """Program + one input read with the original's expressions (`tasks.proposal_parsing: original`).

    The program is the first fence of any tag (the `python` tag optional, so a ```python3 block
    keeps a stray `3` line and an ```input block written first becomes the "program"); the input
    is the first input block, even an empty one, else the text after `# Input:`. At seeding
    (`seeding`) the imports are collected before the cleanup (`clean_seed_program`).
    """
    blocks = list(_ORIGINAL_CODE.finditer(text))
    if not blocks:
        return ParseFailure(Reason.NO_CODE_BLOCK, "no fenced block")
    code = (blocks[0] if code_location == "first" else blocks[-1]).group(1).strip()
    found = _original_block("input").search(text) or _original_heading("Input").search(text)
    if found is None:
        return ParseFailure(Reason.NO_INPUT_BLOCK, "no ```input block and no '# Input:'")
    names = _DEF.findall(code)
    if not names:
        return ParseFailure(Reason.NO_DEF, "the code block defines no function")
    if len(names) > 1 and reject_multiple_functions:
        return ParseFailure(Reason.MULTI_DEF, f"{len(names)} defs: {', '.join(names)}")
    program = rename_entry_function(code, names, rename_function)
    imports = collect_imports(program)
    if seeding:
        program = clean_seed_program(program)
    return ProgramProposal(program=program, input=found.group(1).strip(), imports=imports)


def parse_induction_proposal_original(text: str, num_inputs: int) -> InductionProposal | ParseFailure:
    """The last `num_inputs` input blocks and a message, read with the original's expressions:
    the message is the first message block, else `<message>...</message>`, else the text after
    `# Message:`; an empty one counts."""
    inputs = [m.group(1).strip() for m in _original_block("input").finditer(text)]
    if len(inputs) < num_inputs:
        return ParseFailure(Reason.TOO_FEW_INPUTS, f"{len(inputs)} input blocks, {num_inputs} needed")
    message = (_original_block("message").search(text)
               or re.search(r"<message>\s*(.*?)\s*</message>", text, _ORIGINAL_FLAGS)
               or _original_heading("Message").search(text))
    if message is None:
        return ParseFailure(Reason.NO_MESSAGE, "no ```message block, <message> tag or '# Message:'")
    return InductionProposal(inputs=tuple(inputs[-num_inputs:]), message=message.group(1).strip())


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
    structure); induction fails without a fenced block, which forces format score 0. `strict`
    reads answers exactly as the original did (`reward.solver_parsing: original`); otherwise
    the lenient reading: fences by tag, a heading's value on its line or the next.
    """
    if strict:
        if task_type is TaskType.INDUCTION:
            blocks = list(_ORIGINAL_CODE.finditer(answer))
            if not blocks:
                return ParseFailure(Reason.NO_CODE_BLOCK, "no fenced block in the answer")
            return blocks[-1].group(1).strip()
        return _original_solver_value(answer, "input" if task_type is TaskType.ABDUCTION else "output")
    if task_type is TaskType.ABDUCTION:
        return _fallback_value(answer, "input", strict)
    if task_type is TaskType.DEDUCTION:
        return _fallback_value(answer, "output", strict)
    code = next((b.body for b in reversed(fences(answer)) if b.tag in _CODE_TAGS), None)
    if code is None or not code.strip():
        return ParseFailure(Reason.NO_CODE_BLOCK, "no python block in the answer")
    return code
