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

    _direct: Any = field(default=None, init=False, repr=False)

    @property
    def generator(self) -> Any:
        """What samples the propose and solve batches: with `rollout.async_level: 1` a direct
        line to the dedicated vLLM servers, so that it can run beside the engine's update
        (docs/algorithm.md §14.4); else, or where the policy has no such servers, the policy
        itself (then `overlaps` is False and the two run one after the other)."""
        if self.config.rollout.async_level == 0:
            return self.policy
        if self._direct is None:
            self._direct = _direct_rollout(self.policy, self.config) or self.policy
        return self._direct

    @property
    def overlaps(self) -> bool:
        """Whether generation can run beside the update (one-step-off with a direct line)."""
        return self.generator is not self.policy

    @property
    def last_step(self) -> int:
        """The run's last iteration (`trainer.iterations`)."""
        return self.config.trainer.iterations

    def emit(self, event: str, **data: Any) -> None:
        """Tell whoever watches (the CLI's progress bar) that something happened."""
        if self.on_event is not None:
            self.on_event(event, data)


def _direct_rollout(policy: PolicyHandle, config: AZRConfig) -> Any:
    """The controller's line to the policy's dedicated servers: the EngineClient's, or one built
    from an in-process Policy's server backend (tests, benchmarks); None without servers."""
    from azr.engine.controller.direct_rollout import DirectRollout, RolloutEndpoint

    direct = getattr(policy, "direct_rollout", None)
    if callable(direct):
        return direct()
    endpoint = getattr(getattr(policy, "backend", None), "endpoint", None)
    found = RolloutEndpoint.from_ready({"rollout_servers": endpoint()}) if callable(endpoint) else None
    if found is None:
        return None
    return DirectRollout(found, policy.tokenizer, request_timeout_s=config.rollout.vllm.request_timeout_s,  # type: ignore[attr-defined]
                         concurrency=config.rollout.vllm.max_concurrent_requests)


_event_hook: ProgressHook | None = None


def set_event_hook(hook: ProgressHook | None) -> None:
    """Who hears about stage and iteration progress in this process (the CLI's progress bar)."""
    global _event_hook
    _event_hook = hook


def get_event_hook() -> ProgressHook | None:
    return _event_hook
