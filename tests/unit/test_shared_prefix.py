"""The update's shared prompt prefix (azr/engine/training/shared_prefix.py): a micro-batch whose
prompts start alike runs that start once. Its loss, metrics, gradient and log-probs must be those
of the plain padded batch, against the hand computation of tests/unit/test_engine_update.py too."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from azr.engine.api import TrainSequence
from azr.engine.models.loading import enable_activation_checkpointing, tiny_model
from azr.engine.training.shared_prefix import MIN_SHARED_TOKENS, common_prefix_length, worth_sharing
from azr.engine.training.trrpp_update import UpdateSettings
from tests.unit.test_engine_update import _assert_grads_close, _grads, _hand_loss, _updater

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def _group_batch(seed: int = 0) -> list[TrainSequence]:
    """Two groups as the self-play batch has them: a long common instruction prefix per group,
    then each sequence's own prompt tail (of different lengths) and response."""
    rng = random.Random(seed)
    batch = []
    for group, advantage_sign in (("deduction_solve", 1.0), ("abduction_propose", -1.0)):
        instructions = [rng.randrange(5, 250) for _ in range(40)]
        for index in range(3):
            tail = [rng.randrange(5, 250) for _ in range(3 + 2 * index)]
            response = [rng.randrange(5, 250) for _ in range(4 + index)]
            batch.append(TrainSequence(instructions + tail, response, group, advantage_sign * (0.5 + index)))
    return batch


def test_the_common_prefix_leaves_each_row_its_last_prompt_token() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts: the last token stays a row's own
    assert common_prefix_length([[1, 2, 3]]) == 0
    assert not worth_sharing(MIN_SHARED_TOKENS - 1, 4) and worth_sharing(MIN_SHARED_TOKENS, 2)
    assert not worth_sharing(100, 1)


@pytest.mark.parametrize("micro_batch_size", [3, 6])
def test_sharing_gives_the_loss_metrics_and_gradient_of_the_plain_batch(micro_batch_size: int) -> None:
    batch = _group_batch()
    results = {}
    for share in (False, True):
        model = tiny_model(0)
        updater = _updater(model, UpdateSettings(entropy_coef=0.05, micro_batch_size=micro_batch_size,
                                                 logits_chunk_tokens=5, share_prompt_prefix=share))
        assert updater.share_prefixes is share
        shared = [b.prefix_ids.numel() if b.prefix_ids is not None else 0 for b in updater._micro_batches(batch)]
        metrics = updater.accumulate(batch)
        results[share] = (metrics, _grads(model), shared)
    (plain, plain_grads, none), (ours, our_grads, shared) = results[False], results[True]
    assert none == [0] * len(none)
    # 3 a micro-batch: each is one group (40 common tokens); 6: both groups, no common start
    assert shared == ([40, 40] if micro_batch_size == 3 else [0])
    for field in ("loss", "pg_loss", "entropy", "clip_frac"):
        assert getattr(ours, field) == pytest.approx(getattr(plain, field), rel=1e-5, abs=1e-7), field
    assert ours.tokens == plain.tokens and ours.sequences == plain.sequences
    _assert_grads_close(our_grads, plain_grads)


def test_sharing_matches_the_hand_computation_and_the_reference_log_probs() -> None:
    batch = _group_batch(1)
    settings = UpdateSettings(entropy_coef=0.01, kl_coef=0.5, micro_batch_size=3)
    reference = tiny_model(0).eval().requires_grad_(False)
    model = tiny_model(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hand_model = copy.deepcopy(model)
    hand = _hand_loss(hand_model, batch, settings, reference=reference)
    hand["loss"].backward()
    updater = _updater(model, settings, reference=reference)
    assert updater.share_prefixes
    metrics = updater.accumulate(batch)
    assert metrics.kl == pytest.approx(hand["kl"].item(), rel=1e-4)
    assert metrics.loss == pytest.approx(hand["loss"].item(), rel=1e-5)
    _assert_grads_close(_grads(model), _grads(hand_model))
    shared = updater.sequence_logprobs(batch, reference=True)
    plain = _updater(tiny_model(0), UpdateSettings(kl_coef=0.5, micro_batch_size=3, share_prompt_prefix=False),
                     reference=reference).sequence_logprobs(batch, reference=True)
    for ours, theirs in zip(shared, plain):
        assert ours == pytest.approx(theirs, abs=1e-5)


def test_checkpointed_models_run_every_sequence_whole() -> None:
    model = tiny_model(0)
    enable_activation_checkpointing(model)
    assert not _updater(model, UpdateSettings(share_prompt_prefix=True)).share_prefixes
