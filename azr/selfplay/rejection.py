"""Why a response or a proposal was rejected (docs/algorithm.md §5.5), one value per cause.

Rewards collapse these to the rules of docs/algorithm.md §7; the reasons are kept so that runs can be debugged
and logged per cause.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # response structure
    NO_ANSWER_TAG = "no_answer_tag"
    NO_CODE_BLOCK = "no_code_block"
    NO_INPUT_BLOCK = "no_input_block"
    NO_DEF = "no_def"
    MULTI_DEF = "multi_def"
    TOO_FEW_INPUTS = "too_few_inputs"
    NO_MESSAGE = "no_message"
    # static checks before execution
    BANNED_IMPORT = "banned_import"
    SYNTAX_ERROR = "syntax_error"
    INPUT_CALL_GUARD = "input_call_guard"
    # execution in the sandbox
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    BLOCKED = "blocked"
    NONDETERMINISTIC = "nondeterministic"
    OUTPUT_LIMIT = "output_limit"
    OUTPUT_TOO_LONG = "output_too_long"
    # a valid program whose response broke the think/answer format (buffered, reward -1)
    BAD_FORMAT_BUT_VALID = "bad_format_but_valid"


PARSE_REASONS = frozenset(
    {
        Reason.NO_ANSWER_TAG,
        Reason.NO_CODE_BLOCK,
        Reason.NO_INPUT_BLOCK,
        Reason.NO_DEF,
        Reason.MULTI_DEF,
        Reason.TOO_FEW_INPUTS,
        Reason.NO_MESSAGE,
    }
)
