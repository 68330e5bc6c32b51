"""Response parsing (docs/algorithm.md §4): format score, answer extraction, role-specific parsing."""

from __future__ import annotations

import re

import pytest

from azr.selfplay.parsing import (
    InductionProposal,
    ParseFailure,
    ProgramProposal,
    collect_imports,
    fences,
    parse_generation,
    parse_induction_proposal,
    parse_program_proposal,
    parse_solution,
)
from azr.selfplay.rejection import PARSE_REASONS, Reason
from azr.selfplay.task_types import TaskType

GOOD_PROPOSAL = """Plan: reverse.
```python
def reverse_words(s):
    return ' '.join(reversed(s.split()))
```
```input
'a b c'
```"""


def response(answer: str, think: str = "some thought") -> str:
    """A response as generated after the prompt's trailing <think>."""
    return f" {think} </think>\n<answer>{answer}</answer>"


class TestGeneration:
    def test_well_formed(self) -> None:
        generation = parse_generation(response("42"))
        assert generation.format_ok
        assert generation.answer == "42"
        assert generation.text.startswith("<think>")

    def test_format_is_anchored_at_start(self) -> None:
        assert not parse_generation("</think><answer>1</answer>", prefix="hello <think>").format_ok

    def test_trailing_text_allowed(self) -> None:
        generation = parse_generation(response("1") + "\nextra words")
        assert generation.format_ok and generation.answer == "1"

    def test_missing_answer_block_breaks_format(self) -> None:
        generation = parse_generation(" thinking only </think> 42")
        assert not generation.format_ok
        assert not generation.has_answer_tag
        assert generation.answer == ""

    def test_last_answer_wins_and_unclosed_is_read_to_end(self) -> None:
        generation = parse_generation(" t </think><answer>1</answer> <answer> 2 ")
        assert generation.answer == "2"
        assert generation.format_ok  # the first think/answer pair matches from the start

    def test_text_after_a_model_written_assistant_marker_is_dropped(self) -> None:
        generation = parse_generation(response("7") + "\nUser: more\nAssistant: <think>x")
        assert "User: more" in generation.text
        assert "x" not in generation.text.split("User: more")[1]
        generation = parse_generation(" t </think>Assistant: <answer>9</answer>")
        assert generation.answer == "" and not generation.format_ok

    def test_quotes_around_generation_are_stripped(self) -> None:
        generation = parse_generation(response("'x'") + '"')
        assert generation.text.endswith("</answer>")


class TestFences:
    def test_tags_and_bodies(self) -> None:
        blocks = fences("```python\ncode\n```\n```input\n1, 2\n```\n```\nplain\n```")
        assert [(b.tag, b.body) for b in blocks] == [("python", "code"), ("input", "1, 2"), ("", "plain")]

    def test_code_on_the_fence_line(self) -> None:
        (block,) = fences("```def f(a): return a```")
        assert block.tag == "" and "def f(a)" in block.body

    def test_tag_is_case_insensitive(self) -> None:
        assert fences("```Python\nx\n```")[0].tag == "python"


class TestProgramProposal:
    def test_parses_and_renames_entry_function(self) -> None:
        parsed = parse_program_proposal(GOOD_PROPOSAL)
        assert isinstance(parsed, ProgramProposal)
        assert parsed.program.startswith("def f(s):")
        assert parsed.input == "'a b c'"

    def test_rename_reaches_call_sites_but_not_longer_names(self) -> None:
        code = "```python\ndef go(n):\n    return 0 if n == 0 else go(n - 1) + go_far\n```\n```input\n3\n```"
        parsed = parse_program_proposal(code)
        assert isinstance(parsed, ProgramProposal)
        assert "f(n - 1)" in parsed.program and "go_far" in parsed.program

    def test_python_tag_optional(self) -> None:
        parsed = parse_program_proposal("```\ndef f(x):\n    return x\n```\n```input\n1\n```")
        assert isinstance(parsed, ProgramProposal)

    def test_imports_collected_anywhere(self) -> None:
        code = "import math\ndef f(x):\n    from collections import deque\n    return math.floor(x)"
        assert collect_imports(code) == ("import math", "from collections import deque")

    def test_imports_fallback_when_unparsable(self) -> None:
        assert collect_imports("import math\ndef f(:\n") == ("import math",)

    def test_input_heading_fallback(self) -> None:
        parsed = parse_program_proposal("```python\ndef f(x):\n    return x\n```\n# Input: 5\n")
        assert isinstance(parsed, ProgramProposal) and parsed.input == "5"

    def test_any_last_keeps_existing_f(self) -> None:
        code = "```python\ndef helper(x):\n    return x\ndef f(x):\n    return helper(x)\n```\n```input\n1\n```"
        parsed = parse_program_proposal(code, reject_multiple_functions=False, rename_function="any_last")
        assert isinstance(parsed, ProgramProposal) and "def helper(x)" in parsed.program

    def test_last_code_location(self) -> None:
        code = "```python\nnot code\n```\n```input\n1\n```\n```python\ndef g(x):\n    return x\n```"
        assert isinstance(parse_program_proposal(code), ParseFailure)
        parsed = parse_program_proposal(code, code_location="last")
        assert isinstance(parsed, ProgramProposal) and parsed.program.startswith("def f(x)")


FAILURES = [
    ("", Reason.NO_ANSWER_TAG),
    ("I think the function doubles.", Reason.NO_CODE_BLOCK),
    # the original's quirk: an input block written first is not the program
    ("```input\n1\n```\n```python\ndef f(x):\n    return x\n```", Reason.NO_CODE_BLOCK),
    ("```python\nx = 1\n```\n```input\n1\n```", Reason.NO_DEF),
    ("```python\ndef f(x):\n    def g(y):\n        return y\n    return g(x)\n```\n```input\n1\n```", Reason.MULTI_DEF),
    ("```python\ndef f(x):\n    return x\n```", Reason.NO_INPUT_BLOCK),
]


@pytest.mark.parametrize(("answer", "reason"), FAILURES)
def test_program_proposal_failures(answer: str, reason: Reason) -> None:
    parsed = parse_program_proposal(answer)
    assert isinstance(parsed, ParseFailure)
    assert parsed.reason is reason
    assert parsed.detail


def induction_answer(n_inputs: int, message: str | None = "```message\nreturns its input\n```") -> str:
    blocks = "\n".join(f"```input\n{i}\n```" for i in range(n_inputs))
    return blocks + ("\n" + message if message else "")


class TestInductionProposal:
    def test_takes_the_last_n_inputs(self) -> None:
        parsed = parse_induction_proposal(induction_answer(12), num_inputs=10)
        assert isinstance(parsed, InductionProposal)
        assert parsed.inputs == tuple(str(i) for i in range(2, 12))
        assert parsed.message == "returns its input"

    def test_message_fallbacks(self) -> None:
        for message in ("<message>tag form</message>", "# Message: heading form"):
            parsed = parse_induction_proposal(induction_answer(4, message), num_inputs=4)
            assert isinstance(parsed, InductionProposal) and "form" in parsed.message

    @pytest.mark.parametrize(
        ("answer", "reason"),
        [
            ("", Reason.NO_ANSWER_TAG),
            (induction_answer(9), Reason.TOO_FEW_INPUTS),
            (induction_answer(10, message=None), Reason.NO_MESSAGE),
        ],
    )
    def test_failures(self, answer: str, reason: Reason) -> None:
        parsed = parse_induction_proposal(answer, num_inputs=10)
        assert isinstance(parsed, ParseFailure) and parsed.reason is reason


def test_every_parse_reason_is_reached() -> None:
    reached = {reason for _, reason in FAILURES} | {Reason.TOO_FEW_INPUTS, Reason.NO_MESSAGE}
    assert reached == set(PARSE_REASONS)


class TestSolutions:
    @pytest.mark.parametrize(
        ("answer", "expected"),
        [
            ("```input\n1\n```\nthen\n```input\n'a', 2\n```", "'a', 2"),
            ("# Input: [1, 2]", "[1, 2]"),
            ("call input(3, 4) works", "3, 4"),
            ("<input>'x'</input>", "'x'"),
            ("So the input is 17.", "17"),
            ("  5  ", "  5  "),  # the whole answer, unstripped (the answer extraction strips it first)
        ],
    )
    def test_abduction_fallback_chain(self, answer: str, expected: str) -> None:
        assert parse_solution(TaskType.ABDUCTION, answer) == expected
        assert parse_solution(TaskType.ABDUCTION, answer, strict=False) == expected.strip()

    def test_deduction_uses_output_blocks(self) -> None:
        assert parse_solution(TaskType.DEDUCTION, "```input\n1\n```\n```output\n{'a': 1}\n```") == "{'a': 1}"
        assert parse_solution(TaskType.DEDUCTION, "the output is 'abc'") == "'abc'"

    def test_induction_takes_last_code_block(self) -> None:
        answer = "```python\ndef f(x):\n    return 1\n```\n```python\ndef f(x):\n    return 2\n```"
        assert parse_solution(TaskType.INDUCTION, answer) == "def f(x):\n    return 2"

    def test_induction_without_code_fails(self) -> None:
        parsed = parse_solution(TaskType.INDUCTION, "f returns x")
        assert isinstance(parsed, ParseFailure) and parsed.reason is Reason.NO_CODE_BLOCK


# ------------------------------------------------------------- fidelity settings (issue 13)


def test_renaming_allows_space_before_the_parenthesis() -> None:
    from azr.selfplay.parsing import parse_program_proposal

    answer = "```python\ndef solve (x):\n    return solve (x - 1) if x else 0\n```\n```input\n3\n```"
    parsed = parse_program_proposal(answer)
    assert not isinstance(parsed, ParseFailure)
    assert parsed.program == "def f(x):\n    return f(x - 1) if x else 0"


def test_solver_parsing_follows_the_original_by_default() -> None:
    from azr.config.schema import RewardConfig

    assert RewardConfig().solver_parsing == "original"
    py_fence = "```py\ndef f(a):\n    return a\n```"
    # The original's optional `python` tag: a `py` tag stays in the code (which then fails to run).
    assert parse_solution(TaskType.INDUCTION, py_fence) == "py\ndef f(a):\n    return a"
    assert parse_solution(TaskType.INDUCTION, py_fence, strict=False) == "def f(a):\n    return a"
    assert parse_solution(TaskType.INDUCTION, "```Python\ndef f(a):\n    return a\n```") == "def f(a):\n    return a"
    bare_heading = "so the answer is below\n# Input:\n'abc'"
    assert parse_solution(TaskType.ABDUCTION, bare_heading, strict=False) == "'abc'"
    assert parse_solution(TaskType.ABDUCTION, bare_heading) == "'abc'"  # the original reads on to the next fence
    assert parse_solution(TaskType.ABDUCTION, "# Input: 'abc'") == "'abc'"


def test_monte_carlo_prompts_are_filtered_at_the_prompt_limit_by_default() -> None:
    from azr.config.schema import RolloutConfig
    from azr.pipeline.stages import mc_prompt_limit

    assert mc_prompt_limit(RolloutConfig()) == 6144
    assert mc_prompt_limit(RolloutConfig(mc_prompt_limit="content_max_tokens")) == 5600


# ------------------------------------------- `original` parsing against the original's expressions (issue 24)
# The oracle below is the original's reading, written from its regular expressions (patterns as
# they appear there, flags DOTALL | IGNORECASE); the corpus mixes the forms models write.

_ORIGINAL = re.DOTALL | re.IGNORECASE
_SOLVER_PATTERNS = {
    "input": [r"```input\s*\n?(.*?)\n?```", r"# Input:\s*(.*?)(?=\n```|$)", r"input\s*\((.*?)\)",
              r"<input>\s*(.*?)(?:</input>|\s*$)", r"the input is\s*(.*?)\.?$"],
    "output": [r"```output\s*\n?(.*?)\n?```", r"# Output:\s*(.*?)(?=\n```|$)", r"output\s*\((.*?)\)",
               r"<output>\s*(.*?)(?:</output>|\s*$)", r"the output is\s*(.*?)\.?$"],
}


def _oracle_solver(content: str, kind: str) -> str:
    for pattern in _SOLVER_PATTERNS[kind]:
        matches = list(re.finditer(pattern, content, _ORIGINAL))
        if matches:
            return matches[-1].group(1)
    return content


def _oracle_code(content: str) -> str | None:
    matches = list(re.finditer(r"```(?:python\s*)?\n?(.*?)\n?```", content, _ORIGINAL))
    return matches[-1].group(1).strip() if matches else None


def _oracle_proposal(text: str) -> tuple[str, str] | None:
    code = re.search(r"```(?:python\s*)?\n?(.*?)\n?```", text, _ORIGINAL)
    found = re.search(r"```input\s*\n?(.*?)\n?```", text, _ORIGINAL) or re.search(
        r"# Input:\s*(.*?)(?=\n```|$)", text, _ORIGINAL)
    if not code or not found:
        return None
    snippet = code.group(1).strip()
    names = re.findall(r"^\s*def\s+(\w+)\s*\(", snippet, re.MULTILINE)
    if len(names) != 1:
        return None
    if names[0] != "f":
        snippet = re.sub(rf"def\s+{re.escape(names[0])}\s*\(", "def f(", snippet)
        snippet = re.sub(rf"\b{re.escape(names[0])}\s*\(", "f(", snippet)
    return snippet, found.group(1).strip()


def _oracle_induction(text: str, n: int) -> tuple[tuple[str, ...], str] | None:
    inputs = [m.group(1).strip() for m in re.finditer(r"```input\s*\n?(.*?)\n?```", text, _ORIGINAL)]
    if len(inputs) < n:
        return None
    message = (re.search(r"```message\s*\n?(.*?)\n?```", text, _ORIGINAL)
               or re.search(r"<message>\s*(.*?)\s*</message>", text, _ORIGINAL)
               or re.search(r"# Message:\s*(.*?)(?=\n```|$)", text, _ORIGINAL))
    return (tuple(inputs[-n:]), message.group(1).strip()) if message else None


_VALUE_FORMS = [
    "```input\n'a', 2\n```", "```Input\n[1, 2]\n```", "```input\n```", "```input 5```", "```input\n5\n\n```",
    "# Input: 7", "# Input:\n'abc'", "# Input:\n'abc'\nmore words\n```python\nx\n```", "# input: 3 # comment",
    "f(input(3))", "parse_input(4, 5)", "input ( 'x' )", "<input>'t'</input>", "<input> 9", "<INPUT>1</input>",
    "The input is 42.", "the input is [1, 2]", "so The Input Is 'q'.\nthanks", "plain 5", "",
    "```output\n{'a': 1}\n```", "```OUTPUT\n(1, 2)\n```", "# Output: 3.5", "# Output:\nTrue\n```output\nFalse\n```",
    "output(7)", "<output>'o'</output>", "<output>'unterminated", "The output is None.", "```\n12\n```",
    "```python\ndef f(x):\n    return x\n```", "```py\ndef f(x):\n    return 1\n```", "```python3\ndef g(x):\n    return 2\n```",
    "text ```input\n1\n``` middle ```output\n2\n``` end", "```input\n1\n```\n```input\n2\n```",
]
_CORPUS = _VALUE_FORMS + [a + "\n" + b for a in _VALUE_FORMS[::3] for b in _VALUE_FORMS[1::4]]


@pytest.mark.parametrize("answer", _CORPUS)
def test_original_solver_parsing_matches_the_original(answer: str) -> None:
    assert len(_CORPUS) > 100
    assert parse_solution(TaskType.ABDUCTION, answer) == _oracle_solver(answer, "input")
    assert parse_solution(TaskType.DEDUCTION, answer) == _oracle_solver(answer, "output")
    code = parse_solution(TaskType.INDUCTION, answer)
    assert (None if isinstance(code, ParseFailure) else code) == _oracle_code(answer)


@pytest.mark.parametrize("answer", _CORPUS)
def test_original_proposal_parsing_matches_the_original(answer: str) -> None:
    from azr.selfplay.parsing import parse_induction_proposal_original, parse_program_proposal_original

    parsed = parse_program_proposal_original(answer)
    expected = _oracle_proposal(answer)
    assert (None if isinstance(parsed, ParseFailure) else (parsed.program, parsed.input)) == expected
    induction = parse_induction_proposal_original(answer, 2)
    expected_induction = _oracle_induction(answer, 2)
    got = None if isinstance(induction, ParseFailure) else (induction.inputs, induction.message)
    assert got == expected_induction


def test_original_proposal_parsing_quirks() -> None:
    """What the issue lists: python3 and py fences, an empty input block, an input block first."""
    from azr.selfplay.parsing import parse_program_proposal_original

    python3 = parse_program_proposal_original("```python3\ndef g(x):\n    return x\n```\n```input\n1\n```")
    assert not isinstance(python3, ParseFailure) and python3.program == "3\ndef f(x):\n    return x"
    py = parse_program_proposal_original("```py\ndef f(x):\n    return x\n```\n```input\n1\n```", seeding=True)
    assert not isinstance(py, ParseFailure) and py.program == "def f(x):\n    return x"  # seeding cleanup drops `py`
    empty = parse_program_proposal_original("```python\ndef f(x=1):\n    return x\n```\n```input\n```")
    assert not isinstance(empty, ParseFailure) and empty.input == ""
    first = parse_program_proposal_original("```input\n1\n```\n```python\ndef f(x):\n    return x\n```")
    assert isinstance(first, ParseFailure) and first.reason is Reason.NO_DEF


def test_seeding_cleanup_as_the_original() -> None:
    """Blank lines dropped, every leading string removed, imports collected before cleaning."""
    from azr.selfplay.parsing import parse_program_proposal_original

    response = ('<think>draft\n```python\nimport math\n"""module doc"""\n"""second"""\n\ndef solve(x):\n'
                '    """doc"""\n    "more"\n\n    return math.floor(x)\nprint(solve(2))\n```\n</think>\n'
                "```input\n2.5\n```")
    parsed = parse_program_proposal_original(response, seeding=True)
    assert not isinstance(parsed, ParseFailure)
    assert parsed.program == "import math\n\ndef f(x):\n    return math.floor(x)".replace("\n\n", "\n")
    assert parsed.imports == ("import math",)
    assert parsed.input == "2.5"


def test_monte_carlo_reads_the_last_answer_of_the_whole_response() -> None:
    from azr.selfplay.parsing import answer_of_whole_response, parse_generation

    response = "x</think><answer>1</answer>\nAssistant: again <answer>2</answer>"
    assert parse_generation(response).answer == "1"  # cut at the model-written Assistant:
    assert answer_of_whole_response(response) == "2"
    assert answer_of_whole_response("no tag") == ""


def test_seeding_reads_the_whole_response_under_original_parsing() -> None:
    """A base model's seeding response with no <answer>: the original took the fences anywhere."""
    from azr.config.schema import AZRConfig
    from azr.selfplay.parsing import parse_generation
    from azr.selfplay.proposals import proposal_reading

    response = "draft:\n```python\ndef g(x):\n    return x + 1\n```\n```input\n3\n```\n</think> done"
    answer = parse_generation(response).answer
    original = AZRConfig.model_validate({"tasks": {"proposal_parsing": "original"}})
    parsed = proposal_reading(TaskType.DEDUCTION, response, answer, original, seeding=True)
    assert not isinstance(parsed, ParseFailure) and (parsed.program, parsed.input) == ("def f(x):\n    return x + 1", "3")
    at_self_play = proposal_reading(TaskType.DEDUCTION, response, answer, original)
    assert isinstance(at_self_play, ParseFailure) and at_self_play.reason is Reason.NO_CODE_BLOCK
    lenient = proposal_reading(TaskType.DEDUCTION, response, answer, AZRConfig(), seeding=True)
    assert isinstance(lenient, ParseFailure) and lenient.reason is Reason.NO_ANSWER_TAG
