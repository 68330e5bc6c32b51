"""Structure of the prompt builders and wrappers (docs/algorithm.md §3.1-§3.5).

The wording is ours; these tests pin what the parsers and the replication depend on: section
order, fence tags, the reference and pair layouts, the banned list, the call hint, the swapped
difficulty bullet, and the exact tail of the wrapped prompt.
"""

from __future__ import annotations

import re

import pytest

from azr.config.schema import ORIGINAL_BANNED_IMPORTS, TaskConfig
from azr.selfplay.prompts.paper import (
    CALL_HINT,
    REFERENCES_HEADING,
    abduction_propose_prompt,
    abduction_solve_prompt,
    deduction_propose_prompt,
    deduction_solve_prompt,
    induction_propose_prompt,
    induction_solve_prompt,
    propose_prompt_for,
    solve_prompt_for,
)
from azr.selfplay.task_records import InductionTask, Triplet
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import ChatWrapper, R1Wrapper, make_wrapper

REFS = [
    Triplet("def f(a):\n    return a + 1\n", "1", "2"),
    Triplet("def f(s):\n    return s[::-1]", "'abc'", "'cba'"),
    Triplet("import math\n\ndef f(x, y):\n    return math.gcd(x, y)", "12, 18", "6"),
]
PROGRAM = "def f(n):\n    return [i * i for i in range(n)]\n"

IO_SECTIONS = (
    "## Task:",
    "### Code Requirements:",
    "### Input Requirements:",
    "### Formatting:",
    "### Example Format:",
    "### Evaluation Criteria:",
    REFERENCES_HEADING,
)


def _assert_in_order(text: str, markers: tuple[str, ...]) -> None:
    positions = [text.index(m) for m in markers]
    assert positions == sorted(positions), markers


def _fence_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("```")]


def _difficulty_line(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- Difficulty:")]
    return line


# --- deduction / abduction propose ---------------------------------------------------------


@pytest.mark.parametrize("builder", [deduction_propose_prompt, abduction_propose_prompt])
def test_io_propose_sections_in_order(builder) -> None:
    text = builder(REFS, ORIGINAL_BANNED_IMPORTS)
    _assert_in_order(text, IO_SECTIONS)
    assert text.startswith("## Task:")
    assert text.endswith("\n")
    # Every opened fence is closed.
    assert len(_fence_lines(text)) % 2 == 0
    # The formatting section shows a def f skeleton and the argument-list input form.
    formatting = text[text.index("### Formatting:") : text.index("### Example Format:")]
    assert "```python\ndef f(...):" in formatting
    assert "```input\narg1, arg2, ...\n```" in formatting
    example = text[text.index("### Example Format:") : text.index("### Evaluation Criteria:")]
    assert re.search(r"```python\ndef f\(name: str, info: dict\):", example)
    assert re.search(r"```input\n'\w+', \{'age': \d+, 'city': '[\w ]+'\}\n```", example)


@pytest.mark.parametrize("builder", [deduction_propose_prompt, abduction_propose_prompt])
def test_io_propose_reference_layout(builder) -> None:
    text = builder(REFS, ORIGINAL_BANNED_IMPORTS)
    refs_section = text[text.index(REFERENCES_HEADING) :]
    for i, ref in enumerate(REFS):
        block = (
            f"<snippet_{i}>\n"
            f"```python\n{ref.program.rstrip(chr(10))}\n```\n\n"
            f"```input\n{ref.input}\n```\n\n"
            f"```output\n{ref.output}\n```\n"
            f"</snippet_{i}>"
        )
        assert block in refs_section
    assert f"<snippet_{len(REFS)}>" not in text
    assert re.findall(r"<snippet_(\d+)>", text) == [str(i) for i in range(len(REFS))]
    assert text.endswith(f"</snippet_{len(REFS) - 1}>\n")


@pytest.mark.parametrize("builder", [deduction_propose_prompt, abduction_propose_prompt])
def test_io_propose_without_references(builder) -> None:
    text = builder([], ORIGINAL_BANNED_IMPORTS)
    assert REFERENCES_HEADING not in text
    assert "<snippet_" not in text
    _assert_in_order(text, IO_SECTIONS[:-1])
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("builder", [deduction_propose_prompt, abduction_propose_prompt])
def test_io_propose_banned_list_comma_joined(builder) -> None:
    text = builder(REFS, ORIGINAL_BANNED_IMPORTS)
    joined = ", ".join(ORIGINAL_BANNED_IMPORTS)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- Restricted usage:")]
    assert line.endswith("even in comments: " + joined)
    # The duplicate `datetime` of the original list is rendered as is.
    assert line.count("datetime") == 2
    assert builder(REFS, ["alpha", "beta"]).count("even in comments: alpha, beta\n") == 1


def test_swap_flag_changes_only_the_difficulty_bullet() -> None:
    for builder in (deduction_propose_prompt, abduction_propose_prompt):
        swapped = builder(REFS, ORIGINAL_BANNED_IMPORTS, True).splitlines()
        plain = builder(REFS, ORIGINAL_BANNED_IMPORTS, False).splitlines()
        assert len(swapped) == len(plain)
        changed = [(a, b) for a, b in zip(swapped, plain) if a != b]
        assert len(changed) == 1
        assert changed[0][0].startswith("- Difficulty:")


def test_difficulty_direction_is_swapped_like_the_original() -> None:
    d_swapped = _difficulty_line(deduction_propose_prompt(REFS, [], True))
    a_swapped = _difficulty_line(abduction_propose_prompt(REFS, [], True))
    d_plain = _difficulty_line(deduction_propose_prompt(REFS, [], False))
    a_plain = _difficulty_line(abduction_propose_prompt(REFS, [], False))
    # Original: deduction asks for a hard-to-predict input, abduction for a hard-to-predict output.
    assert "predict your input from the code and the output" in d_swapped
    assert "predict the output from the code and the input" in a_swapped
    assert d_swapped == a_plain and a_swapped == d_plain
    for line in (d_swapped, a_swapped):
        assert "trees" in line and "recursion" in line


def test_deduction_and_abduction_differ_only_in_marked_places() -> None:
    ded = deduction_propose_prompt(REFS, ORIGINAL_BANNED_IMPORTS).splitlines()
    abd = abduction_propose_prompt(REFS, ORIGINAL_BANNED_IMPORTS).splitlines()
    assert len(ded) == len(abd)
    changed = [a for a, b in zip(ded, abd) if a != b]
    # The task paragraph and the difficulty bullet.
    assert len(changed) == 2
    assert changed[1].startswith("- Difficulty:")


def test_code_requirements_bullets() -> None:
    text = deduction_propose_prompt(REFS, [])
    section = text[text.index("### Code Requirements:") : text.index("### Input Requirements:")]
    bullets = [ln for ln in section.splitlines() if ln.startswith("- ")]
    assert len(bullets) == 9
    assert "`f`" in bullets[0]
    assert "10 seconds" in section
    assert "AVOID" in section
    assert "very top" in section


# --- induction propose ---------------------------------------------------------------------


def test_induction_propose_structure() -> None:
    text = induction_propose_prompt(PROGRAM, 10)
    markers = (
        "## Task: Give 10 Inputs",
        "### Input Requirements:",
        "### Message Requirements:",
        "### Formatting:",
        "### Example Format:",
        "### Evaluation Criteria:",
        "### Code Snippet:",
    )
    _assert_in_order(text, markers)
    assert "- Provide 10 valid inputs" in text
    example = text[text.index("### Example Format:") : text.index("### Evaluation Criteria:")]
    assert example.count("```input\n") == 2
    assert example.count("```message\n") == 1
    assert len(_fence_lines(text)) % 2 == 0
    # The program and the call hint share one python fence at the very end.
    assert text.endswith(f"### Code Snippet:\n```python\n{PROGRAM.rstrip()}\n{CALL_HINT}\n```\n")
    assert CALL_HINT == "f(<|YOUR INPUT WILL BE PLUGGED HERE|>)"
    # No references and no banned list.
    assert "<snippet_" not in text
    assert "Restricted usage" not in text
    assert "datetime" not in text


def test_induction_propose_counts_follow_num_inputs() -> None:
    text = induction_propose_prompt(PROGRAM, 4)
    assert "Give 4 Inputs" in text and "Provide 4 valid inputs" in text
    assert "10" not in text.replace("10 seconds", "")


# --- solve prompts ---------------------------------------------------------------------------


def test_deduction_solve_structure() -> None:
    text = deduction_solve_prompt(PROGRAM, "5")
    _assert_in_order(text, ("# Task:", "# Code Snippet:", "# Input:", "# Example Output:"))
    assert f"# Code Snippet:\n```python\n{PROGRAM.rstrip()}\n```" in text
    assert "# Input:\n```input\n5\n```" in text
    example = r"# Example Output:\n```output\n\{'age': \d+, 'city': '[\w ]+'\}\n```\n$"
    assert re.search(example, text)
    assert "```output```" in text  # the instruction names the answer tag


def test_abduction_solve_structure() -> None:
    text = abduction_solve_prompt(PROGRAM, "[0, 1, 4]")
    markers = ("# Task:", "# Code Snippet:", "# Output:", "# Output Format:", "# Example Output:")
    _assert_in_order(text, markers)
    assert "# Output:\n```output\n[0, 1, 4]\n```" in text
    assert "# Output Format:\n```input\narg1, arg2, ...\n```" in text
    assert re.search(r"# Example Output:\n```input\n'\w+', \{.*\}\n```\n$", text)
    assert "```input```" in text


def test_induction_solve_structure() -> None:
    pairs = [("1", "2"), ("'a'", "'aa'"), ("[1, 2]", "[1, 2, 1, 2]")]
    text = induction_solve_prompt(pairs, "It doubles things.")
    markers = (
        "# Task:",
        "# Code Requirements:",
        "# Input and Output Pairs:",
        "# Message:",
        "# Example Output:",
        "Remember",
    )
    _assert_in_order(text, markers)
    pairs_section = text[text.index("# Input and Output Pairs:") : text.index("# Message:")]
    tags = re.findall(r"^```(\w+)$", pairs_section, flags=re.MULTILINE)
    assert tags == ["input_0", "output_0", "input_1", "output_1", "input_2", "output_2"]
    for k, (inp, out) in enumerate(pairs):
        assert f"```input_{k}\n{inp}\n```\n```output_{k}\n{out}\n```" in pairs_section
    assert "# Message:\n```message\nIt doubles things.\n```" in text
    assert re.search(r"# Example Output:\n```python\ndef f\((\w+)\):\n    return \1\n```", text)
    assert "`f()`" in text.splitlines()[-1]
    requirements = text[text.index("# Code Requirements:") : text.index("# Input and Output")]
    assert len([ln for ln in requirements.splitlines() if ln.startswith("- ")]) == 8
    assert "tracking state" not in requirements
    assert "tracking state" in deduction_propose_prompt(REFS, [])


# --- dispatch --------------------------------------------------------------------------------


def test_solve_prompt_for_dispatch() -> None:
    triplet = REFS[0]
    task = InductionTask(PROGRAM, ("1", "2", "3", "4"), ("[0]", "[0, 1]", "x", "y"), "squares")
    assert solve_prompt_for(TaskType.DEDUCTION, triplet) == deduction_solve_prompt(
        triplet.program, triplet.input
    )
    assert solve_prompt_for(TaskType.ABDUCTION, triplet) == abduction_solve_prompt(
        triplet.program, triplet.output
    )
    induction = solve_prompt_for(TaskType.INDUCTION, task)
    assert induction == induction_solve_prompt(task.shown_pairs, "squares")
    assert "```input_1" in induction and "```input_2" not in induction  # hidden half not shown
    with pytest.raises(TypeError):
        solve_prompt_for(TaskType.INDUCTION, triplet)
    with pytest.raises(TypeError):
        solve_prompt_for(TaskType.DEDUCTION, task)


def test_propose_prompt_for_uses_the_task_config() -> None:
    config = TaskConfig(references=2, induction_inputs=6, swap_difficulty_criteria=False)
    assert propose_prompt_for(TaskType.DEDUCTION, REFS, config) == deduction_propose_prompt(
        REFS[:2], config.banned_imports, False
    )
    assert propose_prompt_for(TaskType.ABDUCTION, REFS, config) == abduction_propose_prompt(
        REFS[:2], config.banned_imports, False
    )
    expected = induction_propose_prompt(PROGRAM, 6)
    assert propose_prompt_for(TaskType.INDUCTION, PROGRAM, config) == expected
    assert propose_prompt_for(TaskType.INDUCTION, Triplet(PROGRAM, "1", "[0]"), config) == expected
    no_refs = propose_prompt_for(TaskType.DEDUCTION, REFS, TaskConfig(references=0))
    assert REFERENCES_HEADING not in no_refs
    with pytest.raises(TypeError):
        propose_prompt_for(TaskType.DEDUCTION, PROGRAM, config)


def test_prompts_are_deterministic() -> None:
    task = InductionTask(PROGRAM, ("1", "2"), ("[0]", "[0, 1]"), "m")
    for _ in range(2):
        assert deduction_propose_prompt(REFS, ORIGINAL_BANNED_IMPORTS) == deduction_propose_prompt(
            list(REFS), list(ORIGINAL_BANNED_IMPORTS)
        )
        assert abduction_propose_prompt(REFS, ["x"]) == abduction_propose_prompt(REFS, ("x",))
        assert induction_propose_prompt(PROGRAM, 10) == induction_propose_prompt(PROGRAM, 10)
        assert solve_prompt_for(TaskType.INDUCTION, task) == solve_prompt_for(
            TaskType.INDUCTION, task
        )
        assert R1Wrapper().wrap("q") == R1Wrapper().wrap("q")


# --- wrappers --------------------------------------------------------------------------------


def test_r1_wrapper_tail_and_anchor() -> None:
    question = deduction_solve_prompt(PROGRAM, "3")
    wrapper = R1Wrapper()
    text = wrapper.wrap(question)
    assert text.endswith(f"User: {question}\nAssistant: <think>")
    assert wrapper.response_prefix == "<think>"
    # The parser isolates the generation after the first "Assistant:"; the preamble must not
    # contain one, and the generation must start with the prompt's <think>.
    preamble = text[: -len(f"User: {question}\nAssistant: <think>")]
    assert "Assistant:" not in preamble and "User:" not in preamble
    assert "<think> </think>" in preamble and "<answer> </answer>" in preamble
    assert re.search(r"<think> [^<]+ </think> <answer> [^<]+ </answer>", preamble)
    response = " plan </think> <answer> ```output\n[0, 1, 4]\n``` </answer>"
    generation = (text + response).split("Assistant:")[1].strip()
    assert generation.startswith("<think>")
    assert generation == wrapper.response_prefix + response


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_NO_SYSTEM = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _offline_tokenizer(chat_template: str | None):
    """A real PreTrainedTokenizerFast built in memory: no download, no files."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|pad|>": 1, "<|im_start|>": 2, "<|im_end|>": 3, "def": 4, "f": 5}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|pad|>", unk_token="<unk>"
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def test_chat_wrapper_with_chatml_template() -> None:
    tokenizer = _offline_tokenizer(CHATML)
    question = abduction_solve_prompt(PROGRAM, "[0]")
    wrapper = ChatWrapper(tokenizer)
    text = wrapper.wrap(question)
    assert wrapper.response_prefix == "<think>"
    assert text.endswith("<|im_start|>assistant\n<think>")
    assert text.startswith("<|im_start|>system\n")
    system = text[: text.index("<|im_end|>")]
    assert "<think> </think>" in system and "<answer> </answer>" in system
    assert f"<|im_start|>user\n{question}<|im_end|>\n" in text
    assert text == wrapper.wrap(question)
    assert make_wrapper("chat", tokenizer).wrap(question) == text


def test_chat_wrapper_folds_instructions_when_system_role_is_rejected() -> None:
    tokenizer = _offline_tokenizer(CHATML_NO_SYSTEM)
    text = ChatWrapper(tokenizer).wrap("What is f(2)?")
    assert text.startswith("<|im_start|>user\n")
    assert "<answer> </answer>" in text and "What is f(2)?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<think>")


def test_chat_wrapper_without_template_raises() -> None:
    tokenizer = _offline_tokenizer(None)
    with pytest.raises(ValueError, match="prompt_wrapper: r1"):
        ChatWrapper(tokenizer)
    with pytest.raises(ValueError, match="prompt_wrapper: r1"):
        make_wrapper("chat", tokenizer)


def test_make_wrapper() -> None:
    assert isinstance(make_wrapper("r1"), R1Wrapper)
    with pytest.raises(ValueError, match="tokenizer"):
        make_wrapper("chat")
    with pytest.raises(ValueError, match="r1, chat"):
        make_wrapper("plain")
