"""Merged generation calls (`rollout.merge_calls`): the same samples in fewer, fuller calls.

A sampled row draws from a random stream keyed by (request seed, prompt index in its request,
sample number), and batches are padded to a multiple of 64 tokens (a row's padding, and so the
rounding of its logits, then depends on its own length only), so a request gives the same
completions alone or merged with others, bit for bit. The backend tests compare merged and
separate calls on prompts of different lengths; the pipeline test compares every stage file of
an iteration with `rollout.merge_calls` true and false.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from azr.config.loading import build_config
from azr.engine.api import Completion, GenerationRequest, SamplingSettings
from azr.engine.rollout.transformers_backend import SharedWeightsBackend, TransformersBackend
from azr.engine.models.loading import tiny_model
from azr.engine.rank.policy import Policy
from azr.engine.rollout.row_sampling import RowDecoding, RowSampler, sample_seed
from azr.pipeline import stages
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.run import open_resources
from azr.sandbox import SandboxExecutor

PROMPTS = ["Question 12: what is 12 plus 12?", "Hi", "def f(a):\n    return a",
           "Write a function that sorts a list of numbers and returns the median value. " * 6, "x = [1, 2, 3]"]
"""Lengths 1 to ~100 tokens: a call with the long one is padded to 128, one without it to 64."""


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    return tiny_model(0, tokenizer=tokenizer)


class CountingModel:
    """The tiny model with its generate calls counted (rows per call)."""

    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, []

    def __enter__(self) -> list[int]:
        original = self.model.generate

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(kwargs["input_ids"].shape[0])
            return original(*args, **kwargs)

        self.model.generate = counting
        return self.calls

    def __exit__(self, *exc: object) -> None:
        del self.model.generate


def test_sample_seeds_depend_on_the_samples_place_in_its_request_only() -> None:
    seeds = {sample_seed(7, p, s) for p in range(50) for s in range(8)}
    assert len(seeds) == 400, "every (prompt, sample) has its own stream"
    assert sample_seed(7, 3, 1) == sample_seed(7, 3, 1) != sample_seed(8, 3, 1)
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_a_merged_call_gives_each_request_its_separate_completions(model: Any, tokenizer: Any) -> None:
    lengths = {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS) and min(lengths) < 64 < max(lengths), "the padding differs between the calls"
    backend = TransformersBackend(model, tokenizer, max_batch_size=64)
    requests = [
        GenerationRequest(tuple(PROMPTS[:3]), SamplingSettings(max_new_tokens=8, temperature=0.7, top_p=0.9, n=2, seed=1)),
        GenerationRequest(tuple(PROMPTS[3:]), SamplingSettings(max_new_tokens=5, temperature=1.0, top_k=50, n=3, seed=2)),
        GenerationRequest(tuple(PROMPTS[1:2]), SamplingSettings(max_new_tokens=6, temperature=0, n=2)),
        GenerationRequest((), SamplingSettings(max_new_tokens=4, seed=3)),
    ]
    with CountingModel(model) as separate_calls:
        separate = [backend.generate(list(r.prompts), r.settings) for r in requests]
    with CountingModel(model) as merged_calls:
        merged = backend.generate_many(requests)
    assert merged == separate
    assert merged_calls == [3 * 2 + 2 * 3 + 1] and separate_calls == [6, 6, 1], "one generate call instead of three"
    for request, result in zip(requests, merged):
        assert [len(samples) for samples in result] == [request.settings.n] * len(request.prompts)
        for completion in (c for samples in result for c in samples):
            assert len(completion.token_ids) <= request.settings.max_new_tokens
            assert completion.finish_reason == "stop" or len(completion.token_ids) == request.settings.max_new_tokens
    assert len({c.token_ids for c in merged[0][0]}) == 2, "the samples of a prompt differ"


def test_a_request_samples_the_same_whatever_else_is_in_the_call(model: Any, tokenizer: Any) -> None:
    backend = TransformersBackend(model, tokenizer, max_batch_size=4)
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, n=2, seed=5)
    alone = backend.generate(PROMPTS[:2], settings)
    other = GenerationRequest(tuple(PROMPTS[2:]), SamplingSettings(max_new_tokens=6, n=3, seed=9))
    before, after = backend.generate_many([other, GenerationRequest(tuple(PROMPTS[:2]), settings)])
    assert after == alone, "another request first in the call (other micro-batches) moves no sample"
    assert before == backend.generate(list(other.prompts), other.settings)
    reseeded = backend.generate(PROMPTS[:2], SamplingSettings(max_new_tokens=6, temperature=1.0, n=2, seed=6))
    assert reseeded != alone


def test_row_sampler_draws_from_the_tempered_truncated_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    probs = torch.softmax(logits[0] / 0.8, dim=-1)
    counts = {name: torch.zeros(5) for name in ("plain", "top_k", "top_p")}
    draws = 3000
    for seed in range(draws):
        for name, top_k, top_p in (("plain", -1, 1.0), ("top_k", 2, 1.0), ("top_p", -1, 0.7)):
            row = RowDecoding(temperature=0.8, top_p=top_p, top_k=top_k, max_new_tokens=4, seed=seed)
            scores = RowSampler([row], prompt_width=3, eos_token_id=4)(torch.zeros((1, 3), dtype=torch.long), logits.clone())
            token = int(scores.argmax())
            assert scores[0, token] == 0 and torch.isinf(scores).sum() == 4, "one-hot: argmax picks the draw"
            counts[name][token] += 1
    assert torch.allclose(counts["plain"] / draws, probs, atol=0.03)
    kept = probs[:2] / probs[:2].sum()
    assert counts["top_k"][2:].sum() == 0 and torch.allclose(counts["top_k"][:2] / draws, kept, atol=0.03)
    nucleus = int((torch.cumsum(probs, 0) - probs < 0.7).sum())  # smallest set reaching 0.7
    assert counts["top_p"][nucleus:].sum() == 0 and counts["top_p"][:nucleus].min() > 0


def test_row_sampler_ends_a_row_at_its_own_limit_and_leaves_greedy_rows() -> None:
    rows = [RowDecoding(0.0, 1.0, -1, 2, None), RowDecoding(0.0, 1.0, -1, 5, None)]
    sampler = RowSampler(rows, prompt_width=3, eos_token_id=4)
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, 0.0, 0.0]])
    early = sampler(torch.zeros((2, 4), dtype=torch.long), logits.clone())  # 1 token generated
    assert torch.equal(early, logits)
    late = sampler(torch.zeros((2, 5), dtype=torch.long), logits.clone())  # 2 generated: row 0 is done
    assert int(late[0].argmax()) == 4 and torch.equal(late[1], logits[1])


# ------------------------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    config = build_config("tiny", overrides=["sandbox.timeout_s=3"])
    with SandboxExecutor.from_run_config(config) as ex:
        yield ex


class ValidProposals(SharedWeightsBackend):
    """The real tiny-model backend, except that every deduction and abduction proposal is a
    fixed valid one (a random model writes none), so that the Monte-Carlo stage has two task
    types to merge; every solve and Monte-Carlo sample is the model's own, seeded sampling."""

    PROPOSAL = (" let me think </think>\n<answer>```python\ndef f(xs):\n    return sorted(xs)[:2]\n```\n"
                "```input\n[5, 1, 4]\n```</answer>")

    def __init__(self, inner: Any, tokenizer: Any) -> None:
        self.inner, self.tokenizer = inner, tokenizer

    def generate(self, prompts: list[str], settings: SamplingSettings) -> Any:
        return self.generate_many([GenerationRequest(tuple(prompts), settings)])[0]

    def generate_many(self, requests: list[GenerationRequest]) -> Any:
        results = self.inner.generate_many(requests)
        ids = tuple(self.tokenizer(self.PROPOSAL, add_special_tokens=False)["input_ids"])
        for request, result in zip(requests, results):
            for number, prompt in enumerate(request.prompts):
                if "Write a New Python Code Snippet" in prompt:
                    result[number] = [Completion(self.PROPOSAL, ids, result[number][0].prompt_token_ids, "stop")]
        return results


def _run(tmp_path: Path, executor: SandboxExecutor, merge: bool, name: str) -> Any:
    config = build_config("tiny", overrides=[
        # iteration 1 of 2, checkpoints every 5: the update runs, no checkpoint is written
        "trainer.iterations=2", "trainer.checkpoint_every=5", "sandbox.timeout_s=3",
        "rollout.max_new_tokens=8", "model.dtype=float32",  # bit for bit holds in fp32 (bf16 rounds differently per batch)
        f"rollout.merge_calls={str(merge).lower()}",
    ])
    run, config = open_run_dir(tmp_path / name, config, resume=False)
    policy = Policy.create(config, cpu=True)
    policy.backend = ValidProposals(policy.backend, policy.tokenizer)
    calls: list[int] = []
    generate_many = policy.generate_many

    def counting(requests: list[GenerationRequest]) -> Any:
        calls.append(len(requests))
        return generate_many(requests)

    policy.generate_many = counting  # type: ignore[method-assign]
    res = open_resources(run, config, executor=executor, policy=policy)
    stages.run_iteration(res, 1)
    return run, calls


def _same_files(a: Any, b: Any, step: int) -> list[str]:
    names = sorted(p.name for p in a.iteration_dir(step).iterdir())
    assert names == sorted(p.name for p in b.iteration_dir(step).iterdir())
    for name in names:
        left, right = a.stage_path(step, name), b.stage_path(step, name)
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(left), pd.read_parquet(right), obj=f"{step}/{name}")
        elif name == "update.json":  # all but the clock
            clock = ("seconds", "tokens_per_second", "weight_sync_s", "off_policy")
            first, second = json.loads(left.read_text()), json.loads(right.read_text())
            assert {k: v for k, v in first.items() if k not in clock} == {k: v for k, v in second.items() if k not in clock}
            # the gap diagnostics measure float noise (~1e-7 in float32): equal within that noise
            assert first["off_policy"] == pytest.approx(second["off_policy"], abs=1e-5)
        elif name not in ("timings.json", "metrics.json"):
            assert left.read_bytes() == right.read_bytes(), f"{step}/{name}"
    return names


@pytest.mark.timeout(600)
def test_merging_leaves_every_stage_file_identical(tmp_path: Path, executor: SandboxExecutor) -> None:
    """One iteration with merged calls, one with separate calls, same seed: every stage file
    (prompts, proposals, validation, Monte-Carlo solves, solutions, safety, rewards, the
    update's metrics, the commit) is the same."""
    merged, merged_calls = _run(tmp_path, executor, True, "merged")
    separate, separate_calls = _run(tmp_path, executor, False, "separate")
    names = _same_files(merged, separate, 1)
    assert {"proposals.parquet", "solutions.parquet", "mc_rollouts.parquet", "scored.parquet", "update.json"} <= set(names)
    assert "generate_propose_solve" in merged.read_json(1, "timings.json")
    assert {"propose", "solve"} <= set(separate.read_json(1, "timings.json"))
    assert merged_calls == [2, 2], "merged: propose + solve, then both types' Monte-Carlo solves"
    assert separate_calls == [1] * 4, "separate: propose, two Monte-Carlo calls, solve"
    rollouts = pd.read_parquet(merged.stage_path(1, "mc_rollouts.parquet"))
    assert set(rollouts["task_type"]) == {"abduction", "deduction"} and len(rollouts) == 2 * 2 * 2
    assert rollouts["response"].nunique() > 1, "real sampled solves"


def test_the_merged_stage_writes_both_files_or_neither(tmp_path: Path, executor: SandboxExecutor,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config("tiny", overrides=["trainer.iterations=1", "sandbox.timeout_s=3", "rollout.max_new_tokens=8"])
    run, config = open_run_dir(tmp_path / "run", config, resume=False)
    res = open_resources(run, config, executor=executor, policy=Policy.create(config, cpu=True))
    stages.build_prompts(res, 1)
    proposals, solutions = run.stage_path(1, "proposals.parquet"), run.stage_path(1, "solutions.parquet")

    real_write = stages.write_parquet_atomic
    writes: list[Path] = []

    def second_write_fails(table: Any, path: Path) -> None:
        writes.append(Path(path))
        if len(writes) == 2:
            raise OSError("disk full")
        real_write(table, path)

    monkeypatch.setattr(stages, "write_parquet_atomic", second_write_fails)
    with pytest.raises(OSError, match="disk full"):
        stages.generate_propose_solve(res, 1)
    assert len(writes) == 2, "both tables were being written"
    assert not proposals.exists() and not solutions.exists(), "one file failed: neither is there"
    monkeypatch.setattr(stages, "write_parquet_atomic", real_write)

    stages.generate_propose_solve(res, 1)
    first = pd.read_parquet(solutions)
    solutions.unlink()  # as if killed between the two renames: proposals.parquet alone
    written = proposals.stat().st_mtime_ns
    asked: list[list[int]] = []
    generate_many = res.policy.generate_many
    res.policy.generate_many = lambda requests: asked.append([len(r.prompts) for r in requests]) or generate_many(requests)
    stages.generate_propose_solve(res, 1)
    assert asked == [[len(first)]], "only the missing solve batch is generated"
    assert proposals.stat().st_mtime_ns == written, "a written stage file is never rewritten"
    pd.testing.assert_frame_equal(pd.read_parquet(solutions), first)
    assert not list(run.iteration_dir(1).glob(".*.tmp")), "no temporary file left behind"


def test_the_iteration_flow_names_the_merged_task() -> None:
    from tasks.stages import stage_tasks

    assert [t.name for t in stage_tasks(True)][:3] == ["build-prompts", "generate-propose-solve", "validate"]
    assert "generate-propose-solve" not in [t.name for t in stage_tasks(False)]
    assert [name for name, _ in stages.iteration_stages(build_config("tiny", overrides=["rollout.merge_calls=false"]))] == \
           [name for name, _ in stages.STAGE_FUNCTIONS]
