"""The task records that live in the buffers and flow between stages.

Plain frozen dataclasses of strings: they are written to Parquet and shown in prompts, never
executed outside the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Triplet:
    """A deduction/abduction task: `output` is the sandbox's repr of `f(<input>)`.

    `program` is the full source (its imports at the top); `imports` repeats the import lines
    because induction solvers get the gold program's imports prepended (docs/algorithm.md §6.3).
    """

    program: str
    input: str
    output: str
    imports: tuple[str, ...] = field(default=())
    step: int = 0


@dataclass(frozen=True)
class InductionTask:
    """An induction task: a hidden program, its input/output pairs, and the proposer's message.

    The first half of the pairs is shown to the solver, the rest is held out (docs/algorithm.md §1.3).
    """

    program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    message: str
    imports: tuple[str, ...] = field(default=())
    step: int = 0

    @property
    def shown_count(self) -> int:
        return len(self.inputs) // 2

    @property
    def shown_pairs(self) -> list[tuple[str, str]]:
        k = self.shown_count
        return list(zip(self.inputs[:k], self.outputs[:k]))

    @property
    def hidden_pairs(self) -> list[tuple[str, str]]:
        k = self.shown_count
        return list(zip(self.inputs[k:], self.outputs[k:]))


BufferEntry = Triplet | InductionTask
