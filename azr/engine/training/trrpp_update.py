"""The TRR++ policy update (docs/algorithm.md §9.2-§9.3) on Accelerate.

The loss, for the groups g present in the batch (at most the six (task, role) groups), each
with response-token set T_g of size N_g, is

    loss = 1/G * sum_g [ 1/N_g * sum_{t in T_g} objective_t ]

with objective_t the PPO clipped surrogate, the entropy bonus and the KL term of
`azr.engine.training.trrpp_loss`: a token-mean inside each group and equal weight per group
(the original's 16-sequence micro-batches never straddle groups, so each group gets 1/6 of the
gradient). The reported `entropy` and `kl` use the same weighting. Without old log-probs the
ratio is 1: on-policy REINFORCE with normalised advantages, as the original ran.

The rollout engine's log-probs of the sampled tokens (`behaviour_logprobs`) measure the
off-policy gap every update (`UpdateMetrics.off_policy`), and correct it when asked: the
ratio against them (`ratio_base: behaviour`), or truncated importance weights on the
policy-gradient term (`rollout_is`; azr.engine.training.off_policy, docs/algorithm.md §14).

Every token's weight 1/(G * N_g) is known before the first micro-batch, so the micro-batch
losses sum exactly to the full-batch loss and gradient accumulation needs no rescaling.

Over N ranks each rank passes its share of the batch; G and N_g are global (summed over the
ranks before any weight is set), each rank backpropagates its share of the one global loss, and
the data-parallel average of gradients is undone (x N), so N ranks take the step one process
takes on the whole batch. Every rank runs the same number of micro-batches (a rank with fewer
runs zero-weight filler micro-batches), because FSDP2 and ZeRO-3 gather parameters
collectively in each forward. All reported metrics are global.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from azr.config.schema import TrainerConfig
from azr.engine import interrupt
from azr.engine.api import GroupMetrics, TrainSequence, UpdateMetrics
from azr.engine.training.distributed import (
    all_gather_objects,
    fsdp2_clip_grad_norm,
    is_fsdp2,
    max_over_ranks,
)
from azr.engine.training.logprobs import head_calls, token_logprobs, token_logprobs_and_entropy
from azr.engine.training.off_policy import GapRecorder, behaviour_tensor, gap_metrics, truncated_is_weights
from azr.engine.training.shared_prefix import common_prefix_length, hidden_after_prefix, sharing_supported, worth_sharing
from azr.engine.training.trrpp_loss import LossSettings, TokenLoss, trrpp_token_loss
from azr.engine.training.zero3 import is_deepspeed
from azr.selfplay.task_types import GROUP_NAMES

if TYPE_CHECKING:
    from accelerate import Accelerator



@dataclass(frozen=True)
class UpdateSettings:
    clip_ratio: float = 0.2
    entropy_coef: float = 0.001
    kl_coef: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_size: int = 16
    logits_chunk_tokens: int = 512
    ratio_base: str = "trainer"  # trainer: the detached current log-probs (on-policy); behaviour: the engine's
    rollout_is: str = "none"  # none | token | sequence: truncated importance weights (docs/algorithm.md §14)
    rollout_is_cap: float = 2.0
    share_prompt_prefix: bool = True  # where supported (azr.engine.training.shared_prefix)

    @property
    def loss(self) -> LossSettings:
        return LossSettings(clip_ratio=self.clip_ratio, entropy_coef=self.entropy_coef, kl_coef=self.kl_coef)

    @classmethod
    def from_trainer(cls, trainer: TrainerConfig, async_level: int = 0) -> UpdateSettings:
        return cls(
            clip_ratio=trainer.clip_ratio,
            entropy_coef=trainer.entropy_coef,
            kl_coef=trainer.kl_coef,
            max_grad_norm=trainer.max_grad_norm,
            micro_batch_size=trainer.micro_batch_size,
            logits_chunk_tokens=trainer.logits_chunk_tokens,
            ratio_base=trainer.resolved_ratio_base(async_level),
            rollout_is=trainer.rollout_is,
            rollout_is_cap=trainer.rollout_is_cap,
            share_prompt_prefix=trainer.share_prompt_prefix,
        )


def make_optimizer(model: torch.nn.Module, trainer: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW over all parameters (docs/algorithm.md §9.3: constant lr, decay on every weight)."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=trainer.learning_rate,
        betas=tuple(trainer.adam_betas),
        weight_decay=trainer.weight_decay,
    )


@dataclass
class _Batch:
    """A right-padded micro-batch and where its response tokens sit. With `prefix_ids` the rows'
    common prompt prefix runs once and `input_ids` holds each row's remainder (positions count
    from the end of the prefix)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor  # [tokens] batch row of each response token
    positions: torch.Tensor  # [tokens] position whose hidden state predicts it
    targets: torch.Tensor  # [tokens] the response token
    sequences: list[TrainSequence]
    indices: list[int]  # positions of `sequences` in the caller's list
    prefix_ids: torch.Tensor | None = None


@dataclass
class _LossSums:
    """This rank's weighted sums over its micro-batches (float64), before the all-reduce:
    the batch's loss terms, its clipped tokens, and each group's unweighted token sums."""

    loss: float = 0.0
    policy_loss: float = 0.0
    entropy: float = 0.0
    kl: float = 0.0
    clipped_tokens: float = 0.0
    group_policy_loss: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GROUP_NAMES, 0.0))
    group_entropy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GROUP_NAMES, 0.0))

    @torch.no_grad()
    def add(self, terms: TokenLoss, sequences: Sequence[TrainSequence]) -> None:
        """One micro-batch's terms; `sequences` in the order of its tokens."""
        self.loss += float(terms.loss.detach())
        self.policy_loss += terms.weighted(terms.policy_loss)
        self.entropy += terms.weighted(terms.entropy)
        if terms.kl is not None:
            self.kl += terms.weighted(terms.kl)
        self.clipped_tokens += terms.clipped_tokens
        offset = 0
        for seq in sequences:
            span = slice(offset, offset + len(seq.response_ids))
            self.group_policy_loss[seq.group] += float(terms.policy_loss[span].double().sum())
            self.group_entropy[seq.group] += float(terms.entropy[span].double().sum())
            offset += len(seq.response_ids)

    def totals(self) -> torch.Tensor:
        """[loss, policy loss, entropy, kl, clipped tokens]"""
        return torch.tensor([self.loss, self.policy_loss, self.entropy, self.kl, self.clipped_tokens],
                            dtype=torch.float64)

    def group_totals(self) -> torch.Tensor:
        """[group, (policy loss, entropy)] in GROUP_NAMES order"""
        return torch.tensor([[self.group_policy_loss[g], self.group_entropy[g]] for g in GROUP_NAMES],
                            dtype=torch.float64)


@dataclass(frozen=True)
class _BatchTerms:
    """A micro-batch's loss and what the off-policy gap is measured on."""

    loss: TokenLoss
    logprobs: torch.Tensor  # the trainer's, detached
    behaviour: torch.Tensor  # the rollout engine's (NaN where not recorded)


class TRRPPUpdate:
    """One optimizer step per call of `step`, over any number of micro-batches.

    `model` and `optimizer` are the objects `accelerator.prepare` returned. The model must be a
    transformers causal LM whose logits are its output embedding applied to the last hidden
    state (checked once here), because the head runs separately, in chunks.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        accelerator: Accelerator,
        settings: UpdateSettings,
        *,
        pad_token_id: int = 0,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        reference_model: torch.nn.Module | None = None,
    ) -> None:
        if settings.kl_coef > 0 and reference_model is None:
            raise ValueError("kl_coef > 0 needs a frozen reference model")
        self.model = model
        self.optimizer = optimizer
        self.accelerator = accelerator
        self.settings = settings
        self.pad_token_id = pad_token_id
        self.scheduler = scheduler
        self.reference_model = reference_model if settings.kl_coef > 0 else None
        self.steps = 0
        wrapped = accelerator.unwrap_model(model) is not model or is_fsdp2(model) or is_deepspeed(accelerator)
        self.share_prefixes = settings.share_prompt_prefix and sharing_supported(model, accelerator.num_processes, wrapped)
        self._check_head(model)
        if self.reference_model is not None:
            self._check_head(self.reference_model)

    # ----------------------------------------------------------------- public API

    def step(self, sequences: Sequence[TrainSequence], *, filler: TrainSequence | None = None) -> UpdateMetrics:
        """Accumulate the gradient of the whole batch (this rank's share of it), clip it, take
        one AdamW step. `filler` is a sequence a rank with an empty share runs at weight 0."""
        started = time.perf_counter()
        metrics = self.accumulate(sequences, filler=filler)
        grad_norm, skipped = self.apply_gradients()
        seconds = time.perf_counter() - started
        return replace(metrics, grad_norm=grad_norm, skipped=skipped, seconds=seconds,
                       tokens_per_second=metrics.tokens / seconds if seconds > 0 else 0.0,
                       world_size=self.accelerator.num_processes)

    def accumulate(self, sequences: Sequence[TrainSequence], *, filler: TrainSequence | None = None) -> UpdateMetrics:
        """Backward of the full-batch loss into the parameters' .grad (no optimizer step)."""
        started = time.perf_counter()
        sequences = list(sequences)
        if not sequences and (filler is None or self.accelerator.num_processes == 1):
            raise ValueError("an update needs at least one sequence")
        group_tokens = self._global_group_tokens(sequences)
        present = sum(1 for n in group_tokens.values() if n > 0)
        if present == 0:
            raise ValueError("an update needs at least one sequence (every rank's share is empty)")
        weight_of = {g: 1.0 / (present * n) for g, n in group_tokens.items() if n > 0}
        # DDP and FSDP average gradients over processes; the loss is a global sum, so undo that.
        scale = float(self.accelerator.num_processes)
        batches = self._micro_batches(sequences)
        real = len(batches)
        if self.accelerator.num_processes > 1:  # the same micro-batch count on every rank
            batches += [self._collate([filler or sequences[0]], [0])] * (max_over_ranks(real) - real)
        sums, gap = _LossSums(), GapRecorder()
        self.model.train()
        try:
            for index, batch in enumerate(batches):
                interrupt.stop_point(f"update, micro-batch {index + 1} of {len(batches)}")  # before any optimizer step
                with self._gradient_sync(index == len(batches) - 1):
                    terms = self._batch_loss(batch, weight_of if index < real else {})
                    self.accelerator.backward(terms.loss.loss * scale)
                if index < real:
                    sums.add(terms.loss, batch.sequences)
                    gap.add(terms.logprobs, terms.behaviour, terms.loss.is_weights, self.settings.rollout_is_cap)
        except interrupt.CommandStopped:  # also raised inside a layer (azr.engine.rank.stop_hooks)
            self.optimizer.zero_grad(set_to_none=True)  # a stopped update leaves no partial gradient behind
            raise
        return self._metrics(sums, gap, group_tokens, sequences, started)

    def _batch_loss(self, batch: _Batch, weight_of: dict[str, float]) -> _BatchTerms:
        """The micro-batch's loss; a token's weight is its group's (0 for a group not listed)."""
        with self.accelerator.autocast():
            logprobs, entropy = self._logprobs_and_entropy(batch)
            reference = self._logprobs_only(self.reference_model, batch) if self.reference_model is not None else None
        device = logprobs.device
        tokens = [(s, i) for s in batch.sequences for i in range(len(s.response_ids))]
        old = torch.tensor(
            [s.old_logprobs[i] if s.old_logprobs is not None else float("nan") for s, i in tokens],
            dtype=torch.float32, device=device,
        )
        lengths = [len(s.response_ids) for s in batch.sequences]
        behaviour = behaviour_tensor([s.behaviour_logprobs for s in batch.sequences], lengths, device)
        if self.settings.ratio_base == "behaviour":  # the ratio against the policy that sampled
            old = torch.where(torch.isnan(old), behaviour, old)
        is_weights = None
        if self.settings.rollout_is != "none":
            is_weights = truncated_is_weights(logprobs, behaviour, lengths, self.settings.rollout_is,
                                              self.settings.rollout_is_cap)
        advantages = torch.tensor([s.advantage for s, _ in tokens], dtype=torch.float32, device=device)
        weights = torch.tensor([weight_of.get(s.group, 0.0) for s, _ in tokens], dtype=torch.float32, device=device)
        loss = trrpp_token_loss(logprobs, entropy, advantages, weights, self.settings.loss, old_logprobs=old,
                                reference_logprobs=reference, is_weights=is_weights)
        return _BatchTerms(loss, logprobs.detach(), behaviour)

    def _metrics(self, sums: _LossSums, gap: GapRecorder, group_tokens: dict[str, int],
                 sequences: list[TrainSequence], started: float) -> UpdateMetrics:
        """The batch's metrics from this rank's sums (all-reduced here) and the global counts."""
        totals = self._reduce(sums.totals())
        off_policy = gap_metrics(all_gather_objects(gap.local()), self.settings.rollout_is)
        group_sums = self._reduce(sums.group_totals())
        group_sequences = self._reduce(
            torch.tensor([sum(s.group == g for s in sequences) for g in GROUP_NAMES], dtype=torch.float64)
        )
        loss, policy_loss, entropy, kl, clipped = (float(x) for x in totals)
        total_tokens = sum(group_tokens.values())
        groups = {
            g: GroupMetrics(
                sequences=int(group_sequences[i]),
                tokens=group_tokens[g],
                pg_loss=float(group_sums[i, 0]) / group_tokens[g],
                entropy=float(group_sums[i, 1]) / group_tokens[g],
            )
            for i, g in enumerate(GROUP_NAMES)
            if group_tokens[g] > 0
        }
        seconds = time.perf_counter() - started
        return UpdateMetrics(
            loss=loss,
            pg_loss=policy_loss,
            entropy=entropy,
            kl=kl if self.reference_model is not None else None,
            grad_norm=float("nan"),
            clip_frac=clipped / total_tokens,
            tokens=total_tokens,
            sequences=int(group_sequences.sum()),
            seconds=seconds,
            tokens_per_second=total_tokens / seconds if seconds > 0 else 0.0,
            learning_rate=float(self.optimizer.param_groups[0]["lr"]),
            skipped=False,
            groups=groups,
            off_policy=off_policy,
        )

    def apply_gradients(self) -> tuple[float, bool]:
        """Clip to max_grad_norm and step; a non-finite norm skips the step (as verl does).
        Under ZeRO-3 DeepSpeed has already clipped and stepped (skipping non-finite steps by
        its own rule); this reads its norm."""
        if is_fsdp2(self.model):
            grad_norm = fsdp2_clip_grad_norm(self.model, self.settings.max_grad_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
            grad_norm = float(norm) if norm is not None else float("nan")
        skipped = not math.isfinite(grad_norm)
        if not skipped:
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return grad_norm, skipped

    def sequence_logprobs(self, sequences: Sequence[TrainSequence], *, reference: bool = False) -> list[np.ndarray]:
        """Per-token log-probs of each response under the current (or reference) weights, for
        this rank's sequences (not collective: under FSDP2 or ZeRO-3 every rank must run equally
        many micro-batches here, since each forward gathers parameters)."""
        model = self.reference_model if reference else self.model
        if model is None:
            raise ValueError("there is no reference model (kl_coef is 0)")
        out: list[np.ndarray | None] = [None] * len(sequences)
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in self._micro_batches(list(sequences)):
                with torch.no_grad(), self.accelerator.autocast():
                    values = self._logprobs_only(model, batch)
                offset = 0
                for index, seq in zip(batch.indices, batch.sequences):
                    out[index] = values[offset:offset + len(seq.response_ids)].double().cpu().numpy()
                    offset += len(seq.response_ids)
        finally:
            self.model.train(was_training)
        return out  # type: ignore[return-value]

    # ----------------------------------------------------------------- internals

    def _gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager[None]:
        """Whether this backward reduces gradients across ranks (the last micro-batch's)."""
        if is_deepspeed(self.accelerator):  # DeepSpeed steps in the backward that syncs
            return _deepspeed_boundary(self.accelerator, enabled)
        if enabled or is_fsdp2(self.model):
            # FSDP2 reduce-scatters every micro-batch: skipping it would keep whole fp32
            # gradients (P x 4 bytes) on every rank until the last one (issue 22, item 3).
            return contextlib.nullcontext()
        return self.accelerator.no_sync(self.model)

    def _logprobs_and_entropy(self, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs (with gradient) and entropies of the batch's response tokens."""
        return token_logprobs_and_entropy(
            self._head(self.model), self._response_hidden(self.model, batch), batch.targets,
            self.settings.logits_chunk_tokens, self._head_calls(self.model, batch),
        )

    def _logprobs_only(self, model: torch.nn.Module, batch: _Batch) -> torch.Tensor:
        with torch.no_grad():
            return token_logprobs(
                self._head(model), self._response_hidden(model, batch), batch.targets, self.settings.logits_chunk_tokens,
                self._head_calls(model, batch),
            )

    @staticmethod
    def _response_hidden(model: torch.nn.Module, batch: _Batch) -> torch.Tensor:
        """[response tokens, dim]: the final hidden state that predicts each response token."""
        if batch.prefix_ids is not None:
            hidden = hidden_after_prefix(model, batch.prefix_ids, batch.input_ids, batch.attention_mask)
        else:
            hidden = _last_hidden_state(model, batch.input_ids, batch.attention_mask)
        return hidden[batch.rows, batch.positions]

    def _head_calls(self, model: torch.nn.Module, batch: _Batch) -> int | None:
        """Under ZeRO-3 with several ranks, the most head chunks any rank has in this micro-batch
        (each call gathers the head collectively: equal counts on every rank); else None."""
        if model is not self.model or not is_deepspeed(self.accelerator) or self.accelerator.num_processes == 1:
            return None
        return max_over_ranks(head_calls(len(batch.targets), self.settings.logits_chunk_tokens))

    def _micro_batches(self, sequences: list[TrainSequence]) -> list[_Batch]:
        """Similar lengths together (less padding), or, when prefixes are shared, prompts in
        token order (long common prefixes together); the order does not change the sum."""
        if self.share_prefixes:
            order = sorted(range(len(sequences)), key=lambda i: (sequences[i].prompt_ids, -len(sequences[i].response_ids)))
        else:
            order = sorted(range(len(sequences)),
                           key=lambda i: -(len(sequences[i].prompt_ids) + len(sequences[i].response_ids)))
        size = self.settings.micro_batch_size
        return [self._collate(sequences, order[k:k + size]) for k in range(0, len(order), size)]

    def _collate(self, all_sequences: list[TrainSequence], indices: list[int]) -> _Batch:
        sequences = [all_sequences[i] for i in indices]
        device = self.accelerator.device
        shared = common_prefix_length([s.prompt_ids for s in sequences]) if self.share_prefixes else 0
        if not worth_sharing(shared, len(sequences)):
            shared = 0
        width = max(len(s.prompt_ids) + len(s.response_ids) for s in sequences) - shared
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        rows, positions, targets = [], [], []
        for row, seq in enumerate(sequences):
            ids = (seq.prompt_ids + seq.response_ids)[shared:]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            start = len(seq.prompt_ids) - 1 - shared
            rows.extend([row] * len(seq.response_ids))
            positions.extend(range(start, start + len(seq.response_ids)))
            targets.extend(seq.response_ids)
        return _Batch(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            rows=torch.tensor(rows, dtype=torch.long, device=device),
            positions=torch.tensor(positions, dtype=torch.long, device=device),
            targets=torch.tensor(targets, dtype=torch.long, device=device),
            sequences=sequences,
            indices=indices,
            prefix_ids=torch.tensor(sequences[0].prompt_ids[:shared], dtype=torch.long, device=device) if shared else None,
        )

    def _global_group_tokens(self, sequences: list[TrainSequence]) -> dict[str, int]:
        local = torch.tensor(
            [sum(len(s.response_ids) for s in sequences if s.group == g) for g in GROUP_NAMES], dtype=torch.float64
        )
        counts = self._reduce(local)
        return {g: int(counts[i]) for i, g in enumerate(GROUP_NAMES)}

    def _reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.accelerator.device), reduction="sum").cpu()

    def _head(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model).get_output_embeddings()

    def _check_head(self, model: torch.nn.Module) -> None:
        """The chunked update applies the output embedding itself: make sure that is exactly
        what the model's forward does (no logit scaling or soft-capping in between)."""
        unwrapped = self.accelerator.unwrap_model(model)
        vocab = unwrapped.get_output_embeddings().weight.shape[0]
        ids = torch.arange(min(5, vocab), device=self.accelerator.device).unsqueeze(0)
        was_training = unwrapped.training
        unwrapped.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                out = model(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
                expected = out.logits[:, -1].float()
                ours = unwrapped.get_output_embeddings()(out.hidden_states[-1][:, -1]).float()
        finally:
            unwrapped.train(was_training)
        tolerance = 1e-2 * (1.0 + float(expected.abs().max()))
        if not torch.allclose(expected, ours, rtol=0.0, atol=tolerance):
            raise ValueError(
                f"{type(unwrapped).__name__} does not compute its logits as output_embeddings(last "
                "hidden state) (a logit scale or soft-capping?); the chunked TRR++ update supports "
                "causal LMs whose head is a plain linear layer"
            )


@contextlib.contextmanager
def _deepspeed_boundary(accelerator: Accelerator, boundary: bool) -> Iterator[None]:
    """Tell Accelerate's DeepSpeed wrapper whether this backward ends the accumulation (then
    DeepSpeed clips and steps inside it)."""
    accelerator.gradient_state._set_sync_gradients(boundary)
    try:
        yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def _last_hidden_state(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The final (normed) hidden states through the model's own forward (so DDP/FSDP hooks
    run), with logits for one position only."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=1,
    )
    return out.hidden_states[-1]
