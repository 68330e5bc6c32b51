"""The TRR++ batch of an iteration, read from its scored file (`scored.parquet`).

Both sides read it: the controller to see whether there is anything to train, every engine
rank to train on it (the file is the command's payload; docs/architecture.md, process model).
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from azr.pipeline.atomic_io import PathLike
from azr.engine.training.trrpp_update import TrainSequence

_COLUMNS = ["trained", "prompt_token_ids", "response_token_ids", "group", "advantage"]


def train_sequences(scored: Any) -> list[TrainSequence]:
    """The trained rows of a scored table (a pandas DataFrame or a pyarrow Table)."""
    columns = scored.to_pydict() if hasattr(scored, "to_pydict") else {c: scored[c].tolist() for c in _COLUMNS}
    return [
        TrainSequence(list(prompt), list(response), group, float(advantage))
        for trained, prompt, response, group, advantage in zip(*(columns[c] for c in _COLUMNS))
        if trained
    ]


def read_train_sequences(path: PathLike) -> list[TrainSequence]:
    return train_sequences(pq.read_table(path, columns=_COLUMNS))
