"""Task types, roles and the six TRR++ groups of AZR (docs/algorithm.md §1).

Every row that belongs to a group carries its group name, so the names are part of the
on-disk format: keep them stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TaskType(StrEnum):
    """What the solver must produce, given the rest of a (program, input, output) triplet."""

    DEDUCTION = "deduction"  # program + input -> output (original `code_o`)
    ABDUCTION = "abduction"  # program + output -> an input (original `code_i`)
    INDUCTION = "induction"  # input/output pairs + message -> program (original `code_f`)

    @property
    def original_name(self) -> str:
        """The `problem_type` used by the original code, for reading its seed files and logs."""
        return _ORIGINAL_NAMES[self]


class Role(StrEnum):
    """Who the model plays in a sequence: the task author or the task solver."""

    PROPOSE = "propose"
    SOLVE = "solve"


_ORIGINAL_NAMES = {
    TaskType.DEDUCTION: "code_o",
    TaskType.ABDUCTION: "code_i",
    TaskType.INDUCTION: "code_f",
}


@dataclass(frozen=True, order=True)
class Group:
    """One (task type, role) pair: the unit of TRR++ normalisation and of every metric."""

    task_type: TaskType
    role: Role

    @property
    def name(self) -> str:
        return f"{self.task_type.value}_{self.role.value}"

    @classmethod
    def from_name(cls, name: str) -> Group:
        """Parse `deduction_solve` style names; raises ValueError with the valid names."""
        for group in ALL_GROUPS:
            if group.name == name:
                return group
        valid = ", ".join(g.name for g in ALL_GROUPS)
        raise ValueError(f"unknown group {name!r}; valid groups are: {valid}")

    def __str__(self) -> str:
        return self.name


# The original concatenates the batch in this order: abduction, deduction, induction, each
# propose then solve. Metrics and tables use the same order.
TASK_TYPE_ORDER: tuple[TaskType, ...] = (TaskType.ABDUCTION, TaskType.DEDUCTION, TaskType.INDUCTION)
ALL_GROUPS: tuple[Group, ...] = tuple(
    Group(task_type, role) for task_type in TASK_TYPE_ORDER for role in (Role.PROPOSE, Role.SOLVE)
)
GROUP_NAMES: tuple[str, ...] = tuple(group.name for group in ALL_GROUPS)
