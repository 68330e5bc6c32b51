"""What the stages of a run share in its process: config, run directory, policy, executor,
buffers. Built once per run and reached through one accessor (docs/architecture.md, process model), so
Prefect tasks receive only paths and small values."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azr.selfplay.buffer import Buffers
from azr.config.schema import AZRConfig
from azr.sandbox.api import Executor
from azr.pipeline.run_dir import RunDir
from azr.selfplay.prompts.chat_format import PromptWrapper

ProgressHook = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class Resources:
    config: AZRConfig
    run: RunDir
    policy: Any  # azr.engine.controller.client.EngineClient (an in-process Policy in unit tests); untyped: no torch import
    executor: Executor
    buffers: Buffers | None  # None until the seeding stage has filled them (pipeline/seeding.py)
    wrapper: PromptWrapper
    count_tokens: Callable[[str], int]
    on_event: ProgressHook | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def emit(self, event: str, **data: Any) -> None:
        """Tell whoever watches (the CLI's progress bar) that something happened."""
        if self.on_event is not None:
            self.on_event(event, data)


_lock = threading.Lock()
_current: Resources | None = None


def set_resources(resources: Resources | None) -> None:
    global _current
    with _lock:
        _current = resources


def get_resources() -> Resources:
    with _lock:
        if _current is None:
            raise RuntimeError("no run is active in this process: the training flow sets its resources first")
        return _current


_event_hook: ProgressHook | None = None


def set_event_hook(hook: ProgressHook | None) -> None:
    """Who hears about stage and iteration progress in this process (the CLI's progress bar)."""
    global _event_hook
    _event_hook = hook


def get_event_hook() -> ProgressHook | None:
    return _event_hook
