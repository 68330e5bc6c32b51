"""Turning a question into the exact text the model is fed (docs/algorithm.md §3.1).

Both wrappers end the prompt with `<think>`, so generation always continues inside the think
block; the response parser prepends `response_prefix` to a generated response to get the full
generation that the format check (anchored at `<think>`) runs on.
"""

from __future__ import annotations

from typing import Any, Protocol

RESPONSE_PREFIX = "<think>"

# Our wording of the R1-Zero instructions. It must not contain "User:" or "Assistant:", because
# the parser isolates the generation at the first "Assistant:" of the decoded text.
_INSTRUCTIONS = (
    "Below, a User and an Assistant talk. The User brings a problem and the Assistant works on "
    "it, first thinking the problem through and only then giving the User its answer. The "
    "reasoning is enclosed in <think> </think> tags and the answer in <answer> </answer> tags, like this: <think> step-by-step reasoning goes here </think> "
    "<answer> final answer goes here </answer>."
)

# The `small` prompt profile's shorter system text: each of its questions shows a worked answer.
_SMALL_INSTRUCTIONS = (
    "Think briefly inside <think> </think>, then give the final answer inside <answer> </answer>."
)
INSTRUCTIONS = {"paper": _INSTRUCTIONS, "small": _SMALL_INSTRUCTIONS}


class PromptWrapper(Protocol):
    """What the rollout code needs from a wrapper."""

    response_prefix: str

    def wrap(self, question: str) -> str: ...


class R1Wrapper:
    """The R1-Zero completion wrapper for base models: plain text, no chat template.

    The text ends exactly with `User: {question}\\nAssistant: <think>`: the parser relies on the
    `Assistant:` anchor and the format check on the trailing `<think>`.
    """

    response_prefix: str = RESPONSE_PREFIX

    def __init__(self, instructions: str = _INSTRUCTIONS) -> None:
        self.instructions = instructions

    def wrap(self, question: str) -> str:
        shown = "".join(f"User: {q}\nAssistant: {a}\n" for q, a in _demonstrations(question))
        return f"{self.instructions}\n{shown}User: {question}\nAssistant: {RESPONSE_PREFIX}"


class ChatWrapper:
    """The tokenizer's chat template, for instruct models.

    The think/answer instructions go in a system message and `<think>` is appended after the
    generation prompt, so the model starts inside the think block exactly as with `R1Wrapper`.
    Templates that reject a system role (e.g. Gemma's) get the instructions at the top of the
    user message instead.
    """

    response_prefix: str = RESPONSE_PREFIX

    def __init__(self, tokenizer: Any, instructions: str = _INSTRUCTIONS) -> None:
        _require_chat_template(tokenizer)
        self.tokenizer = tokenizer
        self.instructions = instructions

    def wrap(self, question: str) -> str:
        _require_chat_template(self.tokenizer)
        turns = [m for q, a in _demonstrations(question)
                 for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        messages = [{"role": "system", "content": self.instructions}, *turns, {"role": "user", "content": str(question)}]
        from jinja2.exceptions import TemplateError  # a transformers dependency; chat only

        try:
            text = self._render(messages)
        except TemplateError as system_error:  # e.g. "System role not supported"
            rest = messages[1:]
            merged = [{"role": "user", "content": f"{self.instructions}\n\n{rest[0]['content']}"}, *rest[1:]]
            try:
                text = self._render(merged)
            except TemplateError:
                raise system_error from None
        return text + RESPONSE_PREFIX

    def _render(self, messages: list[dict[str, str]]) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text


def _demonstrations(question: str) -> list[tuple[str, str]]:
    """The worked exchange a question carries (azr.selfplay.prompts.small.Question), shown as an earlier
    turn; none for a plain string."""
    demonstration = getattr(question, "demonstration", None)
    return [demonstration] if demonstration else []


def _require_chat_template(tokenizer: Any) -> None:
    """Fail early with the fix, rather than deep inside transformers at the first rollout."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template; use `model.prompt_wrapper: r1` for base models"
        )


def make_wrapper(kind: str, tokenizer: Any = None, profile: str = "paper") -> R1Wrapper | ChatWrapper:
    """Build the wrapper named by `model.prompt_wrapper` ('r1' or 'chat'), with the think/answer
    instructions of the prompt profile (`tasks.prompt_profile`)."""
    if profile not in INSTRUCTIONS:
        raise ValueError(f"unknown prompt profile {profile!r}; valid profiles are: {', '.join(INSTRUCTIONS)}")
    if kind == "r1":
        return R1Wrapper(INSTRUCTIONS[profile])
    if kind == "chat":
        if tokenizer is None:
            raise ValueError("prompt_wrapper 'chat' needs a tokenizer with a chat template")
        return ChatWrapper(tokenizer, INSTRUCTIONS[profile])
    raise ValueError(f"unknown prompt wrapper {kind!r}; valid kinds are: r1, chat")
