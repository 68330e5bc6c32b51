"""End to end on the bundled SmolLM2-135M-Instruct: load the policy, answer a propose prompt,
take one TRR++ step with fp32 master weights, in the compute dtype `auto` picks on this CPU (bf16
with AVX512-BF16/AMX, fp32 elsewhere: run it under ONEDNN_MAX_CPU_ISA=AVX2 for the fp32 path)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from azr.config.loading import build_config
from azr.engine.api import SamplingSettings
from azr.engine.models.loading import cpu_supports_bf16
from azr.engine.rank.policy import Policy
from azr.engine.api import TrainSequence
from azr.selfplay.prompts.paper import propose_prompt_for
from azr.selfplay.seed_tasks import zero_triplet
from azr.selfplay.task_types import TaskType
from azr.selfplay.prompts.chat_format import ChatWrapper

pytestmark = pytest.mark.usefixtures("fresh_accelerate")


def test_bundled_model_answers_a_propose_prompt_and_takes_an_update_step(bundled_copy: Path) -> None:
    config = build_config("cpu")
    assert config.model.dtype == "auto"
    config.trainer.micro_batch_size = 1
    policy = Policy.create(config, cpu=True)
    assert policy.compute_dtype == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    assert next(policy.unwrapped_model.parameters()).dtype == torch.float32, "fp32 master weights"

    question = propose_prompt_for(TaskType.DEDUCTION, [zero_triplet()], config.tasks)
    prompt = ChatWrapper(policy.tokenizer).wrap(question)
    greedy = policy.generate([prompt], SamplingSettings(max_new_tokens=24, temperature=0))[0][0]
    assert greedy.prompt_token_ids == tuple(policy.tokenizer(prompt, add_special_tokens=False).input_ids)
    assert greedy.text.strip() and len(greedy.token_ids) <= 24
    assert greedy.finish_reason == ("stop" if len(greedy.token_ids) < 24 else "length")
    sampled = policy.generate([prompt], SamplingSettings(max_new_tokens=12, n=2, seed=0))[0]
    assert len(sampled) == 2 and all(len(c.token_ids) <= 12 for c in sampled)

    before = policy.unwrapped_model.model.layers[0].mlp.down_proj.weight.detach().clone()
    batch = [  # ~830 tokens each: about 5 s of forward + backward per sequence on 2 cores
        TrainSequence(greedy.prompt_token_ids, greedy.token_ids, "deduction_propose", 1.0),
        TrainSequence(sampled[0].prompt_token_ids, sampled[0].token_ids, "deduction_solve", -0.5),
    ]
    metrics = policy.update(batch)
    assert metrics.tokens == sum(len(s.response_ids) for s in batch)
    assert set(metrics.groups) == {"deduction_propose", "deduction_solve"}
    assert all(math.isfinite(v) for v in (metrics.loss, metrics.entropy, metrics.grad_norm))
    assert metrics.grad_norm > 0 and not metrics.skipped and metrics.clip_frac == 0.0
    after = policy.unwrapped_model.model.layers[0].mlp.down_proj.weight.detach()
    assert not torch.equal(before, after), "an lr 1e-6 step must move fp32 master weights"
