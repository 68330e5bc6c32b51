"""The vLLM backend's logic without a vLLM engine: sampling requests, completion records,
weight files, the HTTP client's limits, the server's start failures, and the policy's sync
bookkeeping. (The real engine is exercised in test_vllm_server.py.)"""

from __future__ import annotations

import http.server
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.config.schema import VLLMConfig
from azr.config.loading import build_config
from azr.engine.api import Completion, GenerationRequest, RequestGenerator, SamplingSettings
from azr.engine.rollout.vllm.backend import max_model_len, run_with_timeout
from azr.engine.rollout.vllm.common import make_completion, prompt_seed, sampling_fields, write_weight_files
from azr.engine.rollout.vllm.hybrid import VLLMColocateBackend
from azr.engine.rollout.vllm.server import VLLMClient, VLLMError, VLLMServer, find_vllm_python


def test_sampling_fields_are_explicit_and_greedy_is_plain_argmax() -> None:
    sampled = sampling_fields(SamplingSettings(max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=20), [2, 7], n=3)
    assert sampled | {} == {
        "n": 3, "max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.0,
        "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "stop_token_ids": [2, 7], "ignore_eos": False, "skip_special_tokens": True,
    }
    greedy = sampling_fields(SamplingSettings(max_new_tokens=4, temperature=0.0, top_p=0.5, top_k=3), [2], n=1)
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)


def test_prompt_seeds_are_reproducible_distinct_and_optional() -> None:
    seeds = [prompt_seed(5, i) for i in range(100)]
    assert seeds == [prompt_seed(5, i) for i in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2**31 for s in seeds)  # type: ignore[operator]
    assert prompt_seed(6, 0) != prompt_seed(5, 0)
    assert prompt_seed(None, 3) is None


class _Tokenizer:
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i in (0, 2)))


@pytest.mark.parametrize(
    ("ids", "reason", "expected_ids", "expected_reason"),
    [
        ([5, 6, 2], "stop", (5, 6, 2), "stop"),
        ([5, 2, 6], "stop", (5, 2), "stop"),  # cut at the first EOS, as the transformers backend
        ([5, 6, 7, 8], "length", (5, 6, 7, 8), "length"),
        ([5, 0], "stop", (5, 0), "stop"),  # any of several EOS ids
    ],
)
def test_completions_match_the_transformers_records(ids: list[int], reason: str, expected_ids: tuple[int, ...],
                                                    expected_reason: str) -> None:
    completion = make_completion(ids, reason, [1, 1], eos_token_ids=(2, 0), max_new_tokens=4, tokenizer=_Tokenizer())
    assert completion == Completion(_Tokenizer().decode(expected_ids), expected_ids, (1, 1), expected_reason)  # type: ignore[arg-type]


def test_an_aborted_completion_is_an_error_not_an_answer() -> None:
    with pytest.raises(RuntimeError, match="finish_reason='abort'"):
        make_completion([5], "abort", [1], eos_token_ids=(2,), max_new_tokens=4, tokenizer=_Tokenizer())


def test_weight_files_hold_each_tied_tensor_once_in_the_sync_dtype(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from azr.engine.models.loading import tiny_model

    model = tiny_model(seed=0)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    target = write_weight_files(model, tmp_path / "sync-1", torch.bfloat16, shard_bytes=1 << 16)
    shards = sorted(target.glob("*.safetensors"))
    assert len(shards) > 1 and not list(tmp_path.glob(".*"))
    loaded: dict[str, torch.Tensor] = {}
    for shard in shards:
        loaded.update(load_file(shard))
    state = model.state_dict()
    assert "lm_head.weight" not in loaded and set(loaded) == set(state) - {"lm_head.weight"}
    for name, tensor in loaded.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, state[name].to(torch.bfloat16))
    write_weight_files(model, target, torch.float32)  # replacing a set works
    assert {t.dtype for s in target.glob("*.safetensors") for t in load_file(s).values()} == {torch.float32}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(3)
        code = 500 if self.path == "/broken" else 200
        body = b'{"detail": "engine is sad"}' if code == 500 else b'{"ok": true}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_client_bounds_every_call_and_explains_failures(http_server: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("first line\nthe last thing the server said\n")
    client = VLLMClient(http_server, log_path=log)
    assert client.get("/health", timeout=5) == {"ok": True} and client.healthy()
    with pytest.raises(VLLMError, match=r"did not answer within 0.5 s(.|\n)*the last thing the server said"):
        client.get("/slow", timeout=0.5)
    with pytest.raises(VLLMError, match="HTTP 500: .*engine is sad"):
        client.get("/broken", timeout=5)
    closed = VLLMClient("http://127.0.0.1:9")
    assert not closed.healthy(timeout=1)
    with pytest.raises(VLLMError, match="127.0.0.1:9"):
        closed.get("/health", timeout=1)


def _server(tmp_path: Path, python: str, **settings: Any) -> VLLMServer:
    return VLLMServer(
        tmp_path / "model", tmp_path, VLLMConfig(python=python, **settings), dtype="float32", max_model_len=64,
        seed=0, tensor_parallel_size=1, gpu_memory_utilization=0.5, max_num_batched_tokens=64,
    )


def test_a_python_without_vllm_fails_fast_with_the_setup_hint(tmp_path: Path) -> None:
    server = _server(tmp_path, sys.executable)
    with pytest.raises(VLLMError, match=r"exited with code 1(.|\n)*No module named 'vllm'(.|\n)*make vllm-cpu"):
        server.start()
    assert server.process is None
    assert (tmp_path / "pythonpath" / "azr_vllm_extension.py").is_file()


def test_a_server_that_never_answers_is_stopped_after_the_start_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    # `-c`: the version probe (no vLLM here); anything else: a server that never answers.
    fake.write_text("#!/bin/sh\n[ \"$1\" = -c ] && exit 1\necho $$ > \"$(dirname \"$0\")/pid\"\nexec sleep 600\n")
    fake.chmod(0o755)
    server = _server(tmp_path, str(fake), start_timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(VLLMError, match=r"did not become healthy within 1.5 s"):
        server.start()
    assert time.monotonic() - started < 30
    pid = int((tmp_path / "pid").read_text())
    assert not _alive(pid)


FAKE_SERVER = """
import http.server, os, pathlib, sys
pathlib.Path(os.environ["FAKE_PID_FILE"]).write_text(str(os.getpid()))
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""

RUN_PROCESS = """
import sys, time
from pathlib import Path
from azr.config.schema import VLLMConfig
from azr.engine.rollout.vllm.server import VLLMServer
work = Path(sys.argv[1])
VLLMServer(work / "model", work, VLLMConfig(python=str(work / "python")), dtype="float32", max_model_len=64,
           seed=0, tensor_parallel_size=1, gpu_memory_utilization=0.5, max_num_batched_tokens=64).start()
print("started", flush=True)
time.sleep(600)
"""


def test_a_server_does_not_outlive_a_killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess

    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_PID_FILE", str(tmp_path / "pid"))
    run = subprocess.Popen([sys.executable, "-c", RUN_PROCESS, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "started"
        server_pid = int((tmp_path / "pid").read_text())
        os.kill(run.pid, signal.SIGKILL)  # no atexit, no finally: only the death signal is left
        run.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(server_pid):
            time.sleep(0.1)
        assert not _alive(server_pid)
    finally:
        run.kill()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def test_relative_paths_reach_the_server_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    server = VLLMServer(Path("runs/x/model"), Path("runs/x"), VLLMConfig(python=sys.executable), dtype="float32",
                        max_model_len=64, seed=0, tensor_parallel_size=1, gpu_memory_utilization=0.5,
                        max_num_batched_tokens=64)
    model = server.command[server.command.index("--model") + 1]
    assert model == str(tmp_path / "runs/x/model") and server.work_dir == tmp_path / "runs/x"


def test_an_unknown_vllm_python_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(VLLMError, match="does not exist"):
        find_vllm_python(str(tmp_path / "nope"))


def test_colocate_needs_vllm_in_the_engine_and_a_tensor_parallel_size_that_divides_the_ranks(tmp_path: Path) -> None:
    from azr.engine.rank.policy import Policy
    from azr.engine.rollout.vllm.hybrid import hybrid_layout

    config = build_config("tiny", None, ["rollout.backend=vllm", "rollout.vllm.mode=colocate"])
    try:
        import vllm  # noqa: F401
    except ImportError:  # the project's venv has no vLLM (it conflicts with Prefect)
        with pytest.raises(VLLMError, match="needs vLLM in the engine's environment"):
            VLLMColocateBackend.start(config, None, None, tmp_path, torch.float32)
    tp = build_config("tiny", None, ["rollout.backend=vllm", "rollout.vllm.mode=colocate", "rollout.tensor_parallel_size=2"])
    with pytest.raises(VLLMError, match="does not divide the engine's 1 rank"):
        VLLMColocateBackend.start(tp, None, None, tmp_path, torch.float32)
    with pytest.raises(VLLMError, match="rollout.tensor_parallel_size 2 does not divide"):
        Policy.create(tp, cpu=True)  # refused before the model loads
    layout = hybrid_layout(build_config("tiny", None, ["rollout.tensor_parallel_size=2"]), 3, 4)
    assert (layout.groups, layout.group, layout.leads_group) == (2, 1, False)


def test_auto_mode_picks_colocate_only_where_vllm_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from azr.engine.rollout.vllm.backend import resolve_mode

    assert resolve_mode("server") == "server" and resolve_mode("colocate") == "colocate"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert resolve_mode("auto") == "server"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert resolve_mode("auto") == "colocate"


def test_context_length_defaults_to_prompt_plus_response() -> None:
    config = build_config("tiny")
    assert max_model_len(config) == config.rollout.max_prompt_tokens + config.rollout.max_new_tokens
    assert max_model_len(build_config("tiny", None, ["rollout.vllm.max_model_len=999"])) == 999


def test_a_sync_that_hangs_is_an_error_after_its_timeout() -> None:
    assert run_with_timeout(lambda: 7, 5, "x") == 7
    with pytest.raises(VLLMError, match="the weight sync did not finish within 0.2 s"):
        run_with_timeout(lambda: time.sleep(5), 0.2, "the weight sync")
    with pytest.raises(KeyError):
        run_with_timeout(lambda: {}["missing"], 5, "x")


class _RecordingEngine(RequestGenerator):
    """Stands in for a vLLM engine in a unit test of the policy's bookkeeping."""

    separate_weights = True
    weights_discarded = False

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events: list[str] = []

    def generate_many(self, requests: Sequence[GenerationRequest]) -> list[list[list[Completion]]]:
        self.events.append("generate")
        return self.inner.generate_many(requests)

    def prepare_for_update(self) -> None:
        self.events.append("prepare")

    def sync_weights(self, model: Any) -> None:
        self.events.append("sync")

    def close(self) -> None:
        self.events.append("close")


def test_the_policy_syncs_once_per_change_before_generating(fresh_accelerate: None) -> None:
    from azr.engine.rollout.transformers_backend import TransformersBackend
    from azr.engine.rank.policy import Policy
    from azr.engine.api import TrainSequence

    config = build_config("tiny")
    policy = Policy.create(config, cpu=True)
    engine = _RecordingEngine(TransformersBackend(policy.unwrapped_model, policy.tokenizer))
    policy.backend = engine
    settings = SamplingSettings(max_new_tokens=3, seed=0)
    completion = policy.generate(["def f(a):"], settings)[0][0]
    sequence = TrainSequence(completion.prompt_token_ids, completion.token_ids, "deduction_solve", 1.0)
    policy.update([sequence])
    policy.update([sequence])  # two updates (a resume replays several): one sync
    policy.generate(["def f(a):"], settings)
    assert policy.sync_rollout_weights() is None
    policy.update([sequence])
    assert policy.sync_rollout_weights() is not None
    policy.generate(["def f(a):"], settings)
    policy.close()
    assert engine.events == ["generate", "prepare", "prepare", "sync", "generate", "prepare", "sync", "generate", "close"]


class _EchoLLM:
    """Stands in for vllm.LLM in the logic test below: each prompt's answer is its first token
    and its seed, so a misplaced or re-seeded completion shows."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, requests: list[dict[str, Any]], params: list[dict[str, Any]], use_tqdm: bool) -> list[Any]:
        from types import SimpleNamespace

        self.calls.append(len(requests))
        return [SimpleNamespace(outputs=[SimpleNamespace(index=k, token_ids=[r["prompt_token_ids"][0], p.get("seed", -1), k],
                                                         finish_reason="length") for k in range(p["n"])])
                for r, p in zip(requests, params)]


def test_colocated_engines_each_generate_their_share_and_every_rank_gets_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two TP-1 engines (2 ranks): the prompts are dealt by tokens, each keeps the seed of its
    index in the whole call, and the all-gathered result equals one engine's."""
    import types

    import azr.engine.rollout.vllm.hybrid as hybrid

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=dict))
    config = build_config("tiny", None, ["rollout.backend=vllm", "rollout.vllm.mode=colocate"])
    prompts = [[10 + i] * (1 + 3 * (i % 3)) for i in range(7)]
    settings = SamplingSettings(max_new_tokens=4, temperature=1.0, n=2, seed=5)
    sleep = hybrid.SleepSupport(False, 0, "test")

    def backend(rank: int, world_size: int) -> Any:
        return hybrid.VLLMColocateBackend(_EchoLLM(), _Tokenizer(), [2], dtype=torch.float32, sync_timeout_s=5,
                                          layout=hybrid.hybrid_layout(config, rank, world_size), sleep=sleep)

    fields = [backend(0, 1)._request(settings, 2, index) for index in range(len(prompts))]
    alone = backend(0, 1)._generate_ids(prompts, fields)
    shares: dict[int, dict[int, Any]] = {}
    for rank in (0, 1):  # what each rank contributes to the gather
        engine = backend(rank, 2)
        monkeypatch.setattr(hybrid, "all_gather_objects",
                            lambda local, rank=rank: (shares.__setitem__(rank, local), [dict(enumerate(alone))])[1])
        engine._generate_ids(prompts, fields)
        assert 0 < engine.llm.calls[0] < len(prompts)  # a share, not all
    assert set(shares[0]) | set(shares[1]) == set(range(len(prompts))) and not set(shares[0]) & set(shares[1])
    monkeypatch.setattr(hybrid, "all_gather_objects", lambda local: [shares[0], shares[1]])
    assert backend(1, 2)._generate_ids(prompts, fields) == alone
    assert [outputs[0][0][1] for outputs in alone] == [prompt_seed(5, i) for i in range(len(prompts))]
