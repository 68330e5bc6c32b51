"""The controller's own line to the dedicated vLLM servers, for one-step-off generation
(`rollout.async_level: 1`, docs/algorithm.md §14.4).

While the engine's ranks run update t, the controller sends the propose and solve prompts of
iteration t+1 straight to the servers, which still hold the weights before update t. The
requests and the records are those of the engine's own server backend
(`azr.engine.rollout.vllm.requests`): the same token ids, sampling fields and per-prompt seeds,
so the samples equal those the engine would return from the same weights. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from azr.engine.api import GenerationRequest, PromptCompletions, RequestGenerator
from azr.engine.protocol import JsonValue
from azr.engine.rollout.vllm.requests import complete_requests, post_completions
from azr.engine.rollout.vllm.server import VLLMClient


@dataclass(frozen=True)
class RolloutEndpoint:
    """What the engine tells the controller about its dedicated servers (its `ready` message)."""

    urls: tuple[str, ...]
    model_name: str
    eos_token_ids: tuple[int, ...]

    @classmethod
    def from_ready(cls, ready: dict[str, JsonValue]) -> RolloutEndpoint | None:
        """The endpoint in the engine's `ready` message; None for an engine without dedicated servers."""
        found = ready.get("rollout_servers")
        if not isinstance(found, dict) or not found.get("urls"):
            return None
        return cls(tuple(str(u) for u in found["urls"]), str(found["model_name"]),  # type: ignore[union-attr]
                   tuple(int(t) for t in found["eos_token_ids"]))  # type: ignore[union-attr]


class DirectRollout(RequestGenerator):
    """Generation on the dedicated servers from the controller, beside whatever the engine runs."""

    def __init__(self, endpoint: RolloutEndpoint, tokenizer: Any, *, request_timeout_s: float, concurrency: int) -> None:
        self.endpoint = endpoint
        self.tokenizer = tokenizer
        self.clients = [VLLMClient(url) for url in endpoint.urls]
        self.request_timeout_s = request_timeout_s
        self.concurrency = concurrency

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        def generate_ids(prompts: list[list[int]], fields: list[dict[str, Any]]) -> list:
            return post_completions(self.clients, self.endpoint.model_name, prompts, fields,
                                    timeout_s=self.request_timeout_s, concurrency=self.concurrency)

        return complete_requests(self.tokenizer, self.endpoint.eos_token_ids, requests, generate_ids)
