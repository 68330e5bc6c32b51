"""Checkpoints: resume equals an uninterrupted run, incomplete saves are never picked up,
pruning, the transformers export, MLflow logging; the resident policy accessor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.config.loading import build_config
from azr.engine.training import checkpoints
from azr.engine.training.checkpoints import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    log_checkpoint_to_mlflow,
    save_checkpoint,
)
from azr.engine.api import SamplingSettings
from azr.engine.models.loading import tiny_model
from azr.engine.rank.policy import Policy
from azr.engine.api import TrainSequence
from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings

pytestmark = pytest.mark.usefixtures("fresh_accelerate")

BATCH_1 = [
    TrainSequence([5, 6, 7], [100, 200, 300], "deduction_solve", 1.0),
    TrainSequence([8, 9], [11, 12, 13], "deduction_solve", -1.0),
    TrainSequence([40, 41], [50, 51, 52, 53], "induction_propose", 0.7),
]
BATCH_2 = [
    TrainSequence([1, 2, 3], [400, 401], "abduction_solve", -0.3),
    TrainSequence([9, 9], [7, 7, 7], "abduction_solve", 0.9),
]


def _trainer(seed: int) -> TRRPPUpdate:
    """A fresh process's view: new accelerator, model (from `seed`), AdamW."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True)
    model = tiny_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    return TRRPPUpdate(model, optimizer, accelerator, UpdateSettings(micro_batch_size=2))


def _save(trainer: TRRPPUpdate, tokenizer: Any, root: Path, step: int, keep_last: int = 3) -> Path:
    return save_checkpoint(trainer.accelerator, trainer.model, tokenizer, root, step, keep_last=keep_last)


def _params(trainer: TRRPPUpdate) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}


def test_save_load_then_the_next_step_equals_an_uninterrupted_run(tmp_path: Path, tokenizer: Any) -> None:
    first = _trainer(seed=0)
    first.step(BATCH_1)
    saved = _params(first)
    path = _save(first, tokenizer, tmp_path, step=1, keep_last=1)
    noise_after_save = torch.rand(4)
    first.step(BATCH_2)
    uninterrupted = _params(first)

    resumed = _trainer(seed=1)  # other initial weights: everything must come from the checkpoint
    info = load_checkpoint(resumed.accelerator, latest_checkpoint(tmp_path))
    assert info.step == 1 and info.path == path
    assert all(torch.equal(p, saved[n]) for n, p in _params(resumed).items()), "weights restored"
    assert torch.equal(torch.rand(4), noise_after_save), "the RNG state is restored"
    resumed.step(BATCH_2)
    after = _params(resumed)
    assert after.keys() == uninterrupted.keys()
    for name in after:
        assert torch.equal(after[name], uninterrupted[name]), name


def test_without_the_optimizer_state_the_next_step_differs(tmp_path: Path, tokenizer: Any) -> None:
    """The resume test above can fail: AdamW's moments matter for the second step."""
    first = _trainer(seed=0)
    first.step(BATCH_1)
    _save(first, tokenizer, tmp_path, step=1)
    first.step(BATCH_2)
    expected = _params(first)
    fresh = _trainer(seed=0)
    fresh.step(BATCH_1)  # same weights after step 1, but the optimizer is restarted below
    fresh.optimizer.state.clear()
    fresh.step(BATCH_2)
    assert not torch.equal(_params(fresh)["model.norm.weight"], expected["model.norm.weight"])


def test_a_directory_without_its_marker_is_ignored(tmp_path: Path, tokenizer: Any) -> None:
    trainer = _trainer(seed=0)
    good = _save(trainer, tokenizer, tmp_path, step=3)
    torn = _save(trainer, tokenizer, tmp_path, step=7)
    (torn / checkpoints.MARKER).unlink()  # as if the kill came before the marker
    (tmp_path / ".tmp-step-00000009").mkdir()  # a killed save's temporary directory
    assert latest_checkpoint(tmp_path) == good
    assert [c.step for c in list_checkpoints(tmp_path)] == [3]
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(trainer.accelerator, torn)
    assert latest_checkpoint(tmp_path / "missing") is None


def test_a_save_killed_midway_leaves_the_previous_checkpoint_latest(
    tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(seed=0)
    good = _save(trainer, tokenizer, tmp_path, step=1)

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "export_pretrained", killed)
        with pytest.raises(KeyboardInterrupt):
            _save(trainer, tokenizer, tmp_path, step=2)
    assert (tmp_path / ".tmp-step-00000002").is_dir() and not (tmp_path / "step-00000002").exists()
    assert latest_checkpoint(tmp_path) == good
    assert _save(trainer, tokenizer, tmp_path, step=2) == latest_checkpoint(tmp_path)
    assert not (tmp_path / ".tmp-step-00000002").exists()


def test_keeps_the_last_n(tmp_path: Path, tokenizer: Any) -> None:
    trainer = _trainer(seed=0)
    for step in (1, 2, 3, 4):
        _save(trainer, tokenizer, tmp_path, step=step, keep_last=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003", "step-00000004"]


def test_the_export_loads_with_transformers(tmp_path: Path, tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = _trainer(seed=0)
    trainer.step(BATCH_1)
    path = save_checkpoint(
        trainer.accelerator, trainer.model, tokenizer, tmp_path, 1, export_dtype=torch.bfloat16, metadata={"run": "x"}
    )
    assert list_checkpoints(tmp_path)[0].metadata == {"run": "x"}
    exported = AutoModelForCausalLM.from_pretrained(path / "export")
    assert exported.dtype == torch.bfloat16
    assert json.loads((path / "export" / "config.json").read_text())["dtype"] == "bfloat16"
    for name, param in exported.named_parameters():
        assert torch.equal(param, _params(trainer)[name].to(torch.bfloat16)), name
    assert AutoTokenizer.from_pretrained(path / "export")("def f(a):").input_ids == tokenizer("def f(a):").input_ids


def test_log_checkpoint_to_mlflow(tmp_path: Path, tokenizer: Any) -> None:
    import mlflow
    from transformers import AutoModelForCausalLM

    trainer = _trainer(seed=0)
    path = _save(trainer, tokenizer, tmp_path / "ckpt", step=5)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("engine-test", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    model_id = log_checkpoint_to_mlflow(path, run_id=run.info.run_id, tracking_uri=uri)

    logged = client.get_logged_model(model_id)
    assert logged.status == "READY"
    assert logged.params["step"] == "5" and logged.source_run_id == run.info.run_id
    files = {f.path for f in client.list_logged_model_artifacts(model_id)}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    local = Path(logged.artifact_location.removeprefix("file://"))
    reloaded = AutoModelForCausalLM.from_pretrained(local)
    assert torch.equal(reloaded.model.norm.weight, _params(trainer)["model.norm.weight"])
    with pytest.raises(ValueError, match="no MLflow run"):
        log_checkpoint_to_mlflow(path, tracking_uri=uri)


def test_the_resident_policy_generates_trains_and_resumes(tmp_path: Path) -> None:
    config = build_config("tiny")
    policy = Policy.create(config, cpu=True)
    completions = policy.generate(["def f(a):"], SamplingSettings(max_new_tokens=4, seed=0))
    sequence = TrainSequence(completions[0][0].prompt_token_ids, completions[0][0].token_ids, "deduction_solve", 1.0)
    metrics = policy.update([sequence])
    assert metrics.tokens == len(sequence.response_ids) and metrics.grad_norm > 0
    saved = policy.save_checkpoint(tmp_path, step=1)
    assert policy.resume(tmp_path).step == 1 and latest_checkpoint(tmp_path) == saved
