"""The engine over 2 gloo ranks on CPU (real processes, torchrun): a DDP and an FSDP2 update
equal the 1-process update, 2-rank generation equals 1-rank, checkpoints move between 1 and 2
ranks with the same weights and AdamW state; ZeRO-3 where DeepSpeed runs.

Tolerances: everything runs in fp32 (model.dtype float32). The ranks sum the same per-token
terms in a different order (two partial sums, all-reduced; DDP averages and the update
multiplies by 2 again), so the loss agrees to fp32 rounding (~1e-7 relative) and the gradient
norm to a few 1e-6 relative (FSDP2 adds per-shard squared norms). One AdamW step at lr 1e-3
divides the gradient by its running RMS, so a rounding-level gradient difference moves a
weight by at most ~1e-6 (seen: 5e-7); 1e-5 is 1% of the step. A real bug (a wrong token
weight, a missed all-reduce, a lost optimizer state) moves weights by ~1e-3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.config.loading import build_config
from azr.engine.training.distributed import balanced_shares

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "support" / "distributed_worker.py"
WEIGHT_ATOL = 1e-5


def _launch(out: Path, ranks: int, strategy: str, *actions: str, cache: Path) -> dict[str, Any]:
    out.mkdir(parents=True)
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "AZR_CACHE_DIR": str(cache),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               str(WORKER), str(out), strategy, *actions]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == ranks
    assert all(r["rank_results_equal"] for r in result["results"]), "ranks returned different results"
    result["dir"] = out
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, bundled_copy: Path, azr_cache: Path) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("distributed")
    one, two = base / "ckpt-1rank", base / "ckpt-2ranks"
    return {
        "single": _launch(base / "single", 1, "ddp", "update:1", "generate", f"save:{one}", "update:2", "update:3",
                          cache=azr_cache),
        "ddp": _launch(base / "ddp", 2, "ddp", "update:1", "generate", cache=azr_cache),
        "fsdp": _launch(base / "fsdp", 2, "fsdp", "update:1", "export", "generate", f"save:{two}", f"load:{one}", "update:2",
                        "update:3", cache=azr_cache),
        "resumed_single": _launch(base / "resumed", 1, "fsdp", f"load:{two}", "update:2", cache=azr_cache),
        "two": two,
    }


def _record(run: dict[str, Any], action: str) -> dict[str, Any]:
    return next(r for r in run["results"] if r["action"].startswith(action))


def _weights(run: dict[str, Any], action: str) -> dict[str, torch.Tensor]:
    return torch.load(run["dir"] / _record(run, action)["weights"], weights_only=True)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = WEIGHT_ATOL) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"weights differ by {worst}"


def _assert_same_update(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("tokens", "sequences", "skipped"):
        assert a[key] == b[key], key
    for key in ("loss", "pg_loss", "entropy", "clip_frac"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=5e-5)
    assert a["groups"].keys() == b["groups"].keys()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_two_rank_update_equals_the_one_process_update(runs: dict[str, Any], strategy: str) -> None:
    single, multi = runs["single"], runs[strategy]
    one, two = _record(single, "update:1")["metrics"], _record(multi, "update:1")["metrics"]
    _assert_same_update(one, two)
    assert (one["world_size"], two["world_size"], two["strategy"]) == (1, 2, strategy)
    _assert_same_weights(_weights(single, "update:1"), _weights(multi, "update:1"))
    # the tolerance is far below what one step moves a weight (the comparison is not vacuous)
    moved = max(float((a - b).abs().max()) for a, b in zip(_weights(single, "update:1").values(),
                                                            _weights(single, "update:2").values()))
    assert moved > 50 * WEIGHT_ATOL


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_only_rank_0_reads_the_weights(runs: dict[str, Any], strategy: str) -> None:
    """One host copy per machine: rank 1 builds the model on the meta device and receives rank
    0's weights (the update and generation tests above compare the result with one process)."""
    assert _record(runs[strategy], "create")["weight_reads"] == [1, 0]
    assert _record(runs["single"], "create")["weight_reads"] == [1]


def test_a_rank_with_no_sequences_still_takes_the_global_step(runs: dict[str, Any]) -> None:
    """One sequence over 2 FSDP2 ranks: rank 1 runs a zero-weight filler micro-batch."""
    _assert_same_update(_record(runs["single"], "update:3")["metrics"], _record(runs["fsdp"], "update:3")["metrics"])
    _assert_same_weights(_weights(runs["single"], "update:3"), _weights(runs["fsdp"], "update:3"))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_rank_generation_equals_one_rank(runs: dict[str, Any], strategy: str) -> None:
    one, two = _record(runs["single"], "generate"), _record(runs[strategy], "generate")
    assert len(one["greedy"]) == 6 and all(len(group) == 2 for group in one["sampled"])
    assert two["greedy"] == one["greedy"]
    assert two["sampled"] == one["sampled"]


def test_a_one_rank_checkpoint_resumes_on_two_fsdp_ranks(runs: dict[str, Any]) -> None:
    single, fsdp = runs["single"], runs["fsdp"]
    _assert_same_weights(_weights(fsdp, "load:"), _weights(single, "update:1"), atol=0.0)
    # update:2 after the load uses the restored AdamW moments: equal to the uninterrupted run
    _assert_same_update(_record(single, "update:2")["metrics"], _record(fsdp, "update:2")["metrics"])
    _assert_same_weights(_weights(fsdp, "update:2"), _weights(single, "update:2"))


def test_a_two_rank_checkpoint_resumes_on_one_rank(runs: dict[str, Any]) -> None:
    single, resumed = runs["single"], runs["resumed_single"]
    _assert_same_weights(_weights(resumed, "load:"), _weights(runs["fsdp"], "update:1"), atol=0.0)
    _assert_same_update(_record(single, "update:2")["metrics"], _record(resumed, "update:2")["metrics"])
    _assert_same_weights(_weights(resumed, "update:2"), _weights(single, "update:2"))


def test_the_two_rank_checkpoint_is_sharded_with_a_full_export(runs: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    (path,) = [p for p in runs["two"].iterdir() if p.name.startswith("step-")]
    meta = json.loads((path / "meta.json").read_text())
    assert (meta["world_size"], meta["strategy"]) == (2, "fsdp")
    assert sorted(p.name for p in (path / "state").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    exported = load_file(path / "export" / "model.safetensors")
    full = _weights(runs["fsdp"], "update:1")
    for name, tensor in exported.items():
        assert tensor.shape == full[name].shape
        torch.testing.assert_close(tensor, full[name], rtol=0, atol=0)
    assert (path / "export" / "tokenizer.json").is_file() and (path / "COMPLETE").is_file()


def test_the_engine_exports_whole_weights_from_fsdp2_shards(runs: dict[str, Any]) -> None:
    """export_weights gathers FSDP2's DTensor shards (not Accelerate's generic state dict)."""
    from safetensors.torch import load_file

    exported = load_file(runs["fsdp"]["dir"] / "export" / "model.safetensors")
    full = _weights(runs["fsdp"], "update:1")
    assert exported and set(exported) <= set(full)
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, full[name], rtol=0, atol=0)


def test_zero3_update_equals_the_one_process_update(runs: dict[str, Any], tmp_path: Path, azr_cache: Path) -> None:
    reason = _zero3_unavailable()
    if reason:
        pytest.skip(reason)
    multi = _launch(tmp_path / "zero3", 2, "zero3", "update:1", cache=azr_cache)
    _assert_same_update(_record(runs["single"], "update:1")["metrics"], _record(multi, "update:1")["metrics"])
    _assert_same_weights(_weights(runs["single"], "update:1"), _weights(multi, "update:1"))


def _zero3_unavailable() -> str | None:
    from azr.engine.training.zero3 import zero3_unavailable_reason

    return zero3_unavailable_reason(cpu=True)


def test_a_launch_with_the_wrong_rank_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from azr.engine.rank.policy import Policy

    monkeypatch.setenv("WORLD_SIZE", "1")  # as a launcher of one process sets it
    with pytest.raises(ValueError, match=r"1 rank\(s\) but the config asks for 2.*--num_processes 2"):
        Policy.create(build_config("tiny", overrides=["trainer.processes=2"]), cpu=True)


def test_a_launcher_config_of_another_strategy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from azr.engine.rank.policy import Policy

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch exports for fsdp.yaml
    with pytest.raises(ValueError, match="trainer.strategy is ddp: set -s trainer.strategy=fsdp"):
        Policy.create(build_config("tiny", overrides=["trainer.strategy=ddp"]), cpu=True)


def test_balanced_shares_cover_every_item_once_and_balance_tokens() -> None:
    sizes = [9, 1, 5, 5, 3, 8, 2]
    shares = balanced_shares(sizes, 3)
    assert sorted(i for share in shares for i in share) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes)
    assert balanced_shares(sizes, 3) == shares and balanced_shares(sizes, 1) == [list(range(len(sizes)))]
    assert balanced_shares([4], 2) == [[0], []]


def test_fsdp2_reduce_scatters_every_micro_batch(tmp_path: Path) -> None:
    """Gradient accumulation under FSDP2 keeps only the sharded fp32 gradient: after a
    micro-batch that does not end the update, every parameter already has its (DTensor)
    gradient shard, instead of a whole unsharded gradient held back until the last one."""
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor

    from azr.engine.models.loading import tiny_model
    from azr.engine.training.distributed import apply_fsdp2
    from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings, make_optimizer

    config = build_config("tiny", overrides=["model.dtype=float32"])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = apply_fsdp2(tiny_model(0), torch.device("cpu"), torch.float32, 1)
        updater = TRRPPUpdate(model, make_optimizer(model, config.trainer), Accelerator(cpu=True),
                              UpdateSettings.from_trainer(config.trainer))
        with updater._gradient_sync(False):  # a micro-batch that does not end the accumulation
            model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits.float().square().mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert grads and all(isinstance(g, DTensor) for g in grads)
    finally:
        dist.destroy_process_group()
