"""What a vLLM server is asked and how its answer becomes completion records, without torch:
the engine's server backends and the controller's direct rollout (one-step-off generation,
`rollout.async_level: 1`, azr.engine.controller.direct_rollout) send byte-identical requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from azr.engine.api import Completion, GenerationRequest, PromptCompletions, SamplingSettings
from azr.engine.rollout.completion_records import completion_record, encode_prompts
from azr.engine.rollout.vllm.server import VLLMClient, VLLMError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

RawOutput = tuple[Sequence[int], str | None, Sequence[float] | None]
"""(token ids, vLLM finish reason, the sampled tokens' log-probs or None)."""

BEHAVIOUR_LOGPROBS = 0
"""vLLM's `logprobs` sampling field: 0 top alternatives, so each position returns the sampled
token's log-prob alone (vLLM's default logprobs mode: the raw model distribution, before
temperature and filtering, the quantity the trainer computes)."""
def sampling_fields(settings: SamplingSettings, eos_token_ids: Sequence[int], *, n: int) -> dict[str, Any]:
    """vLLM sampling parameters equal to the transformers backend's decoding of `settings`.

    Every field is explicit, so neither the checkpoint's generation_config.json nor vLLM's
    defaults (e.g. repetition penalty) change the rollouts. Detokenization is left to the
    caller, which decodes with the run's tokenizer.
    """
    greedy = settings.greedy
    return {
        "n": n,
        "max_tokens": settings.max_new_tokens,
        "temperature": 0.0 if greedy else settings.temperature,
        "top_p": 1.0 if greedy else settings.top_p,
        "top_k": -1 if greedy else settings.top_k,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop_token_ids": list(eos_token_ids),
        "ignore_eos": False,
        "skip_special_tokens": True,
    }


def prompt_seed(seed: int | None, index: int) -> int | None:
    """A seed per prompt, so a call is reproducible whatever the engine's batching and two equal
    prompts in one call still get independent samples. None stays None (not reproducible)."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def make_completion(
    token_ids: Sequence[int],
    finish_reason: str | None,
    prompt_token_ids: Sequence[int],
    *,
    eos_token_ids: Sequence[int],
    max_new_tokens: int,
    tokenizer: PreTrainedTokenizerBase,
    logprobs: Sequence[float] | None = None,
) -> Completion:
    """The transformers backend's record of a vLLM output; vLLM's 'abort' (or any reason other
    than a stop token or the length limit) is an error, not an answer."""
    return completion_record(token_ids, prompt_token_ids, eos_token_ids, max_new_tokens, tokenizer,
                             finish_reason=finish_reason or "abort", logprobs=logprobs)


def request_fields(settings: SamplingSettings, eos_token_ids: Sequence[int], n: int, index: int) -> dict[str, Any]:
    """The sampling fields of prompt `index` of a request: its settings, behaviour log-probs and
    its own seed."""
    fields = {**sampling_fields(settings, eos_token_ids, n=n), "logprobs": BEHAVIOUR_LOGPROBS}
    seed = None if settings.greedy else prompt_seed(settings.seed, index)
    if seed is not None:
        fields["seed"] = seed
    return fields


GenerateIds = Callable[[list[list[int]], list[dict[str, Any]]], list[list[RawOutput]]]
"""(prompt token ids, per-prompt sampling fields) -> the engine's raw outputs per prompt."""


def complete_requests(tokenizer: PreTrainedTokenizerBase, eos_token_ids: Sequence[int],
                      requests: Sequence[GenerationRequest], generate_ids: GenerateIds) -> list[PromptCompletions]:
    """The completions of every request, from one `generate_ids` call for all their prompts; a
    greedy prompt is sampled once and repeated."""
    encoded: list[list[int]] = []
    fields: list[dict[str, Any]] = []
    owners: list[SamplingSettings] = []
    for request in requests:
        ids = encode_prompts(tokenizer, request.prompts)
        per_prompt = 1 if request.settings.greedy else request.settings.n
        encoded += ids
        fields += [request_fields(request.settings, eos_token_ids, per_prompt, index) for index in range(len(ids))]
        owners += [request.settings] * len(ids)
    raw = generate_ids(encoded, fields) if encoded else []
    flat: list[list[Completion]] = []
    for ids, outputs, settings, asked in zip(encoded, raw, owners, fields):
        if len(outputs) != asked["n"]:
            raise VLLMError(f"vLLM returned {len(outputs)} completions for a prompt, expected {asked['n']}")
        completions = [
            make_completion(tokens, reason, ids, eos_token_ids=eos_token_ids,
                            max_new_tokens=settings.max_new_tokens, tokenizer=tokenizer, logprobs=logprobs)
            for tokens, reason, logprobs in outputs
        ]
        flat.append(completions * (settings.n // asked["n"]))
    results, start = [], 0
    for request in requests:
        results.append(flat[start:start + len(request.prompts)])
        start += len(request.prompts)
    return results


def choice_logprobs(choice: dict[str, Any]) -> list[float] | None:
    """The sampled tokens' log-probs of one choice of the completions endpoint (None if absent)."""
    found = (choice.get("logprobs") or {}).get("token_logprobs")
    return None if found is None else [float(x) for x in found]


def post_completions(clients: Sequence[VLLMClient], model_name: str, prompts: list[list[int]],
                     fields: list[dict[str, Any]], *, timeout_s: float, concurrency: int) -> list[list[RawOutput]]:
    """Prompt i to server i mod len(clients) on the completions endpoint, `concurrency`
    requests in flight per server; the raw outputs in prompt order."""

    def one(index: int) -> list[RawOutput]:
        client = clients[index % len(clients)]
        body = {"model": model_name, "prompt": prompts[index], "return_token_ids": True, **fields[index]}
        answer = client.post("/v1/completions", body, timeout=timeout_s)
        choices = sorted(answer["choices"], key=lambda c: c["index"])
        return [(c["token_ids"], c.get("finish_reason"), choice_logprobs(c)) for c in choices]

    workers = max(1, min(concurrency * len(clients), len(prompts)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vllm-request") as pool:
        return list(pool.map(one, range(len(prompts))))
