"""The one place that owns the Parquet schemas: buffer rows and every stage file.

Every file is readable with `pandas.read_parquet`; prompts, responses, programs, inputs,
outputs, statuses, rewards and advantages are plain columns so that any iteration can be
inspected without this package.
"""

from __future__ import annotations

import pyarrow as pa

TRIPLET_SCHEMA = pa.schema(
    [
        pa.field("program", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("imports", pa.list_(pa.string()), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
    ]
)
"""Deduction/abduction rows. Explicit, so an empty step file still has typed columns."""

INDUCTION_SCHEMA = pa.schema(
    [
        pa.field("program", pa.string(), nullable=False),
        pa.field("inputs", pa.list_(pa.string()), nullable=False),
        pa.field("outputs", pa.list_(pa.string()), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("imports", pa.list_(pa.string()), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
    ]
)
"""Induction rows: the program with its input/output pairs and the proposer's message."""


_REFERENCE = pa.struct([("program", pa.string()), ("input", pa.string()), ("output", pa.string())])
PROMPT_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("task_type", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("index", pa.int64(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("references", pa.list_(_REFERENCE), nullable=False),
        pa.field("program", pa.string()),
        pa.field("input", pa.string()),
        pa.field("output", pa.string()),
        pa.field("inputs", pa.list_(pa.string())),
        pa.field("outputs", pa.list_(pa.string())),
        pa.field("message", pa.string()),
    ]
)
"""Prompt rows: what the model was shown and the task behind it, one column per field."""



_KEYS = [
    pa.field("step", pa.int64(), nullable=False),
    pa.field("group", pa.string(), nullable=False),
    pa.field("task_type", pa.string(), nullable=False),
    pa.field("index", pa.int64(), nullable=False),
]
_GENERATION = [
    pa.field("response", pa.string(), nullable=False),
    pa.field("prompt_token_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("response_token_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("response_tokens", pa.int64(), nullable=False),
    pa.field("finish_reason", pa.string(), nullable=False),  # stop | length
]

_BEHAVIOUR = [
    pa.field("behaviour_logprobs", pa.list_(pa.float32())),  # per response token; null: not recorded
    pa.field("policy_version", pa.int64()),  # the update whose weights sampled it (0: the initial ones)
]
"""What the off-policy gap is measured and corrected with (docs/algorithm.md §11): the rollout
engine's log-prob of every sampled token and the policy version that sampled it."""

PROPOSALS_SCHEMA = pa.schema(_KEYS + [pa.field("prompt", pa.string(), nullable=False)] + _GENERATION + _BEHAVIOUR)
"""proposals.parquet: one proposer response per propose prompt."""

VALIDATED_SCHEMA = pa.schema(
    _KEYS
    + [
        pa.field("format_ok", pa.bool_(), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # '' when valid and formatted
        pa.field("detail", pa.string(), nullable=False),
        pa.field("program", pa.string()),
        pa.field("input", pa.string()),
        pa.field("output", pa.string()),
        pa.field("inputs", pa.list_(pa.string())),
        pa.field("outputs", pa.list_(pa.string())),
        pa.field("message", pa.string()),
        pa.field("imports", pa.list_(pa.string())),
    ]
)
"""validated.parquet: the executor's verdict on each proposal, and the task when valid."""

MC_ROLLOUTS_SCHEMA = pa.schema(
    _KEYS
    + [
        pa.field("sample", pa.int64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("response_tokens", pa.int64(), nullable=False),
        pa.field("solve_rate", pa.float64(), nullable=False),  # of the task, repeated per sample
        pa.field("in_buffer", pa.bool_(), nullable=False),  # False: solve prompt over the limit
    ]
)
"""mc_rollouts.parquet: the Monte-Carlo solves of each valid proposal (group = its propose group)."""

SOLUTIONS_SCHEMA = pa.schema(
    _KEYS
    + [pa.field("prompt", pa.string(), nullable=False)]
    + _GENERATION
    + [
        pa.field("format_ok", pa.bool_(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("accuracy", pa.float64()),  # None: not scored
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
    + _BEHAVIOUR
)
"""solutions.parquet: solver responses scored by the executor."""

SCORED_SCHEMA = pa.schema(
    _KEYS
    + [
        pa.field("role", pa.string(), nullable=False),
        pa.field("prompt_token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("response_token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("response_tokens", pa.int64(), nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("advantage", pa.float64(), nullable=False),
        pa.field("trained", pa.bool_(), nullable=False),
    ]
    + _BEHAVIOUR
)
"""scored.parquet: one row per sequence of the TRR++ batch, with its reward and advantage."""


SAFETY_SCHEMA = pa.schema(
    _KEYS
    + [
        pa.field("source", pa.string(), nullable=False),  # proposals | mc_rollouts | solutions
        pa.field("sample", pa.int64(), nullable=False),  # Monte-Carlo sample number, else 0
        pa.field("rules", pa.list_(pa.string()), nullable=False),  # rules that matched ([] if only the judge)
        pa.field("matches", pa.list_(pa.string()), nullable=False),  # the matched words, as written
        pa.field("judge", pa.bool_()),  # the judge's verdict; None when it was not asked
        pa.field("reasoning", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
    ]
)
"""safety.parquet: the responses the safety monitor flagged, with what matched."""

EVAL_RESPONSES_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("response", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("response_tokens", pa.int64(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),  # stop | length
        pa.field("sample", pa.int64()),  # 0..n-1 with --samples n; 0 for greedy
    ]
)
"""Evaluation responses.parquet: the model's answer(s) to each benchmark prompt."""

EVAL_RESULTS_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.string()),  # None when scoring a prediction file (no model)
        pa.field("response", pa.string()),  # None when scoring a prediction file
        pa.field("prediction", pa.string()),  # None: no prediction for this id
        pa.field("scored_prediction", pa.string(), nullable=False),  # after reducing an assertion
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | missing | empty | restates_call | executor status
        pa.field("error", pa.string(), nullable=False),
        pa.field("format_ok", pa.bool_()),  # think/answer format (azr prompts only)
        pa.field("finish_reason", pa.string()),
        pa.field("response_tokens", pa.int64()),
        pa.field("sample", pa.int64()),  # 0..n-1 with --samples n; 0 for greedy
        pa.field("base_correct", pa.bool_()),  # EvalPlus base tests only / LiveCodeBench public tests
    ]
)
"""Evaluation results.parquet: one verdict per benchmark problem (and sample)."""
