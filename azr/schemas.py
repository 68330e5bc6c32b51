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


