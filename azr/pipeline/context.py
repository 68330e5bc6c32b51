"""What the stages of a run share in its process: config, run directory, policy, executor,
buffers, the MLflow tracker. Built once per run (`azr.pipeline.run.open_resources`) and passed
to every stage and Prefect task as an argument (docs/architecture.md, process model); it holds live
objects, so the tasks that take it neither cache nor persist their results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azr.config.schema import AZRConfig
from azr.engine.api import PolicyHandle
from azr.pipeline.run_dir import RunDir
from azr.sandbox.api import Executor
from azr.selfplay.buffer import Buffers
from azr.selfplay.prompts.chat_format import PromptWrapper

if TYPE_CHECKING:
    from azr.pipeline.mlflow_run import Tracker

ProgressHook = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class RunContext:
    """One run's live objects, typed; `res` in the stages' signatures."""

    config: AZRConfig
    run: RunDir
    policy: PolicyHandle  # the run's EngineClient (an in-process Policy in tests and benchmarks)
    executor: Executor
    buffers: Buffers | None  # None until the seeding stage has filled them (pipeline/seeding.py)
    wrapper: PromptWrapper
    count_tokens: Callable[[str], int]
    on_event: ProgressHook | None = None
    tracker: Tracker | None = None
    """The run's MLflow tracker, once the training flow has started it (None: no logging)."""
    replayed: list[int] = field(default_factory=list)
    """Iterations whose updates opening the run replayed from their scored.parquet."""
    owns_policy: bool = False
    """The run started the engine, so closing the run stops it (not a policy it was handed)."""
    owns_executor: bool = False
    """The run started the sandbox workers, so closing the run stops them."""

    @property
    def last_step(self) -> int:
        """The run's last iteration (`trainer.iterations`)."""
        return self.config.trainer.iterations

    def emit(self, event: str, **data: Any) -> None:
        """Tell whoever watches (the CLI's progress bar) that something happened."""
        if self.on_event is not None:
            self.on_event(event, data)


_event_hook: ProgressHook | None = None


def set_event_hook(hook: ProgressHook | None) -> None:
    """Who hears about stage and iteration progress in this process (the CLI's progress bar)."""
    global _event_hook
    _event_hook = hook


def get_event_hook() -> ProgressHook | None:
    return _event_hook
