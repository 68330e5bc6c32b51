"""Rollout generation: one interface for propose, Monte-Carlo and solve stages.

A backend takes fully formatted prompt texts (the wrappers in `azr.selfplay.prompts.chat_format` already applied the
chat template, so no special tokens are added again) and returns `n` completions per prompt,
each with its token ids and why it ended. `TransformersBackend` is the default; a vLLM backend
implements the same `GenerationBackend` protocol.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch

from azr.config.schema import RolloutConfig
from azr.engine import interrupt
from azr.engine.rollout.completion_records import completion_record, encode_prompts
from azr.engine.api import Completion, GenerationRequest, Generator, PromptCompletions, RequestGenerator, SamplingSettings
from azr.engine.rollout.row_sampling import RowDecoding, RowSampler, sample_seed

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

PAD_MULTIPLE = 64
"""Batches are left-padded to a multiple of this many tokens. A row's padding is then fixed by
its own length (modulo 64), whatever rows share its batch, and in float32 the CPU kernels'
reductions (vectorised over 16-64 lanes) round its logits alike: a merged call gives each
request the completions it gets alone, bit for bit (tests/integration/test_generation_merging.py). In
bfloat16 and on GPUs the rounding can still depend on the batch (most rows agree). Costs at
most 63 padding tokens a row."""


class GenerationBackend(Generator, Protocol):
    """A rollout engine the policy drives. `separate_weights` backends (vLLM) hold a copy of
    the weights that `sync_weights` refreshes; the others decode with the trained model itself."""

    separate_weights: bool
    weights_discarded: bool  # the copy was dropped (vLLM slept at level 2): a sync is due

    def prepare_for_update(self) -> None:
        """Free what the update needs (vLLM sleeps); called before every update."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load the trained model's current weights into the engine's copy."""
        ...

    def close(self) -> None:
        ...


class SharedWeightsBackend(RequestGenerator):
    """A `GenerationBackend` that decodes with the trained model itself: nothing to free
    before an update, no copy to sync, nothing to stop."""

    separate_weights = False
    weights_discarded = False

    def prepare_for_update(self) -> None:
        """Nothing to free: the model is the trainer's."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to copy: the model is the trainer's."""

    def close(self) -> None:
        """Nothing runs outside this process."""


def plan_batches(
    lengths: Sequence[int], max_new_tokens: int | Sequence[int], max_batch_tokens: int, max_batch_size: int
) -> list[list[int]]:
    """Group row indices into generate calls: longest rows first, similar lengths together.

    `max_new_tokens` is one limit for all rows or one per row. A call holds at most
    `max_batch_size` rows and rows x (its longest prompt + its largest max_new_tokens) <=
    `max_batch_tokens` (the KV cache it needs), except that a single row always fits. The
    longest call comes first, so an out-of-memory error shows at once.
    """
    new = [max_new_tokens] * len(lengths) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    most_new = 0
    for index in order:
        width = (lengths[current[0]] if current else lengths[index]) + max(most_new, new[index])
        if current and (len(current) + 1 > max_batch_size or (len(current) + 1) * width > max_batch_tokens):
            batches.append(current)
            current, most_new = [], 0
        current.append(index)
        most_new = max(most_new, new[index])
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class GenerationPlan:
    """The rows one merged call decodes and the generate calls (micro-batches) that decode them.

    A row is (request, prompt index in its request, sample number): `n` rows per prompt, one
    when the request is greedy (its result is repeated).
    """

    encoded: list[list[list[int]]]  # token ids per request, per prompt
    settings: list[SamplingSettings]  # per request
    rows: list[tuple[int, int, int]]
    batches: list[list[int]]

    def prompt_ids(self, row: int) -> list[int]:
        request, prompt, _ = self.rows[row]
        return self.encoded[request][prompt]

    def row_settings(self, row: int) -> SamplingSettings:
        return self.settings[self.rows[row][0]]

    def decoding(self, row: int) -> RowDecoding:
        """The row's sampling, with its own seed (None when greedy or unseeded)."""
        request, prompt, sample = self.rows[row]
        settings = self.settings[request]
        seed = None if settings.greedy or settings.seed is None else sample_seed(settings.seed, prompt, sample)
        return RowDecoding(settings.temperature, settings.top_p, settings.top_k, settings.max_new_tokens, seed)

    def cost(self, batch: int) -> int:
        """rows x (longest prompt + largest max_new_tokens) of a generate call."""
        rows = self.batches[batch]
        return len(rows) * (max(len(self.prompt_ids(r)) for r in rows) + max(self.row_settings(r).max_new_tokens for r in rows))


class Decoded(NamedTuple):
    """One decoded row: its generated ids (padding after an EOS included) and the behaviour
    log-prob of each."""

    ids: tuple[int, ...]
    logprobs: tuple[float, ...]


class SampledLogprobs:
    """A transformers logits processor that records, for every row, the log-prob of the token
    each step chose under the model's own scores (log-softmax of the raw logits, before any
    temperature or filtering), in float32.

    A step's choice is only known at the next call (it is the last column of `input_ids`), so
    the processor keeps one step's log-softmax; `finish` reads the last step's from the output.
    It must come first in the processor list, where the scores are still the model's.
    """

    def __init__(self) -> None:
        self.pending: torch.Tensor | None = None
        self.chosen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.pending is not None:
            self.chosen.append(self.pending.gather(1, tokens[:, None].to(self.pending.device)).squeeze(1).cpu())
            self.pending = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[rows, generated tokens] log-probs, given generate's output (prompt + generated)."""
        self._take(sequences[:, -1])
        if not self.chosen:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self.chosen, dim=1)


class TransformersBackend(SharedWeightsBackend):
    """Batched `model.generate`: left padding, length-grouped micro-batches, KV cache.

    Sampling parameters come only from `SamplingSettings`: the checkpoint's
    generation_config.json (e.g. an instruct model's temperature 0.7) is ignored, so rollouts
    follow the run configuration. A seeded call is reproducible and leaves the global RNG as it
    was: every sampled row draws from a generator of its own, seeded from (seed, prompt index,
    sample number) (`azr.engine.rollout.row_sampling`), so a request's samples do not depend on which
    process decodes them, on the calls before, or on the requests merged into the same call
    (`generate_many`; the engine's ranks split the calls: `azr.engine.rollout.sharded`).
    Greedy requests with n > 1 decode each prompt once and repeat the result.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_tokens: int = 65536,
        max_batch_size: int = 64,
        compute_dtype: torch.dtype | None = None,
        eos_token_ids: Sequence[int] | None = None,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.compute_dtype = compute_dtype
        self.synced_gpus = False
        self.eos_token_ids = tuple(eos_token_ids) if eos_token_ids is not None else model_eos_ids(model, tokenizer)
        if not self.eos_token_ids:
            raise ValueError("the tokenizer and the model's generation config define no EOS token")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    @classmethod
    def from_rollout(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rollout: RolloutConfig, *,
                     compute_dtype: torch.dtype | None = None) -> TransformersBackend:
        return cls(
            model,
            tokenizer,
            max_batch_tokens=rollout.generation_batch_tokens,
            max_batch_size=rollout.generation_batch_size,
            compute_dtype=compute_dtype,
        )

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[PromptCompletions]:
        """The completions of each request, decoded together: rows of all requests share the
        generate calls (fuller batches), each with its request's sampling and length limit."""
        plan = self.plan(requests)
        if not plan.rows:
            return [[] for _ in requests]
        return self.records(plan, self.decode_plan(plan))

    def plan(self, requests: Sequence[GenerationRequest]) -> GenerationPlan:
        """The rows of all requests (n copies of each prompt, 1 when greedy) and the generate
        calls (lists of rows) that decode them."""
        encoded = [encode_prompts(self.tokenizer, r.prompts) for r in requests]
        settings = [r.settings for r in requests]
        rows = [(q, p, copy) for q, (ids, s) in enumerate(zip(encoded, settings))
                for p in range(len(ids)) for copy in range(1 if s.greedy else s.n)]
        batches = plan_batches([len(encoded[q][p]) for q, p, _ in rows], [settings[q].max_new_tokens for q, _, _ in rows],
                               self.max_batch_tokens, self.max_batch_size)
        return GenerationPlan(encoded, settings, rows, batches)

    def decode_plan(self, plan: GenerationPlan) -> dict[int, Decoded]:
        """All generate calls of the plan in this process; the generated ids by row."""
        return self.decode(plan, range(len(plan.batches)))

    def decode(self, plan: GenerationPlan, which: Sequence[int]) -> dict[int, Decoded]:
        """Run the generate calls numbered `which` of the plan; the generated ids (and their
        behaviour log-probs) by row."""
        outputs: dict[int, Decoded] = {}
        with self._decoding_state():
            for index in which:
                batch = plan.batches[index]
                outputs.update(zip(batch, self._generate_batch(plan, batch)))
        return outputs

    def records(self, plan: GenerationPlan, outputs: dict[int, Decoded]) -> list[list[list[Completion]]]:
        """`settings.n` completion records per prompt of each request, in prompt order."""
        results: list[list[list[Completion]]] = [[[] for _ in ids] for ids in plan.encoded]
        for row, (request, prompt, _) in enumerate(plan.rows):
            settings = plan.settings[request]
            ids, logprobs = outputs[row]
            completion = completion_record(ids, plan.encoded[request][prompt], self.eos_token_ids,
                                           settings.max_new_tokens, self.tokenizer, logprobs=logprobs)
            results[request][prompt].extend([completion] * (1 if not settings.greedy else settings.n))
        return results

    def _generate_batch(self, plan: GenerationPlan, batch: list[int]) -> list[Decoded]:
        prompts = [plan.prompt_ids(r) for r in batch]
        decodings = [plan.decoding(r) for r in batch]
        width = -(-max(len(p) for p in prompts) // PAD_MULTIPLE) * PAD_MULTIPLE
        device = _model_device(self.model)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        from transformers import LogitsProcessorList

        recorder = SampledLogprobs()  # first: it sees the model's own scores
        processors = LogitsProcessorList([recorder])
        if RowSampler.needed(decodings):
            processors.append(RowSampler(decodings, width, self.eos_token_ids[0]))
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=self._generation_config(max(d.max_new_tokens for d in decodings)),
            logits_processor=processors,
            stopping_criteria=_stop_when_asked(),  # an interrupted run: stop after this token
            # transformers turns this on for FSDP modules; the sharded backend gathers FSDP2
            # parameters first, so decoding is local. ZeRO-3 gathers per module in every
            # forward: there all ranks step together until all are done.
            synced_gpus=self.synced_gpus,
        )
        interrupt.stop_point("generation")
        # A row with a smaller limit than the call's was ended by a forced EOS: cut it there.
        logprobs = recorder.finish(output).tolist()
        return [Decoded(tuple(row[:d.max_new_tokens]), tuple(lp[:d.max_new_tokens]))
                for row, lp, d in zip(output[:, width:].tolist(), logprobs, decodings)]

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        """Greedy selection: sampled rows reach it as one-hot scores from `RowSampler`."""
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            eos_token_id=list(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
            use_cache=True,
            do_sample=False,
        )

    @contextlib.contextmanager
    def _decoding_state(self) -> Iterator[None]:
        """Eval mode, no grad, autocast to the compute dtype (weights cast once per call, not
        once per token), the checkpoint's sampling defaults hidden."""
        model = self.model
        device = _model_device(model)
        was_training = model.training
        saved_config = model.generation_config
        model.generation_config = _neutral_generation_config(saved_config)
        model.eval()
        param_dtype = next(model.parameters()).dtype
        autocast = (
            torch.autocast(device_type=device.type, dtype=self.compute_dtype)
            if self.compute_dtype is not None and self.compute_dtype != param_dtype
            else contextlib.nullcontext()
        )
        try:
            with torch.no_grad(), autocast:
                yield
        finally:
            model.generation_config = saved_config
            model.train(was_training)


def _neutral_generation_config(config: GenerationConfig) -> GenerationConfig:
    """Only the special-token ids of the checkpoint's generation config."""
    from transformers import GenerationConfig

    keep = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    return GenerationConfig(**{k: getattr(config, k, None) for k in keep if getattr(config, k, None) is not None})


def model_eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """EOS ids of the model's generation config (may be several, e.g. Llama 3) and tokenizer."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured is not None:
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(dict.fromkeys(ids))


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _stop_when_asked() -> Any:
    """A stopping criterion that ends every row once the controller asked the engine to stop
    (azr.engine.interrupt): generation returns at the next token, and the command fails."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), interrupt.requested(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopWhenAsked()])
