"""Disk use is bounded and watched: only the newest `tracking.keep_logged_models` checkpoint
models keep their artifacts in MLflow, a run that cannot fit is refused before it starts, and a
checkpoint or logged model that would fill the disk is warned of first."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import mlflow
import pytest

from azr.ops import disk_use
from azr.config.loading import build_config
from azr.ops.disk_use import DiskSpaceError, check_before_start, estimate
from azr.pipeline.model_retention import run_checkpoint_models
from azr.pipeline.run_dir import open_run_dir
from azr.pipeline.mlflow_run import Tracker


def _checkpoint(root: Path, step: int, size: int = 4096) -> Path:
    """A complete checkpoint directory as the engine writes it (marker, meta, export)."""
    path = root / f"step-{step:08d}"
    (path / "export").mkdir(parents=True)
    (path / "export" / "model.safetensors").write_bytes(bytes([step % 256]) * size)
    (path / "export" / "config.json").write_text("{}", encoding="utf-8")
    (path / "meta.json").write_text(json.dumps({"step": step, "metadata": {}}), encoding="utf-8")
    (path / "COMPLETE").write_text(json.dumps({"step": step}), encoding="utf-8")
    return path


def _artifact_files(location: str) -> list[Path]:
    path = Path(location.removeprefix("file://"))
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


@pytest.mark.parametrize("keep", [2, None])
def test_only_the_newest_logged_models_keep_their_artifacts(tmp_path: Path, keep: int | None) -> None:
    config = build_config("tiny", overrides=[f"tracking.keep_logged_models={'null' if keep is None else keep}",
                                             "tracking.system_metrics=false"])
    run, config = open_run_dir(tmp_path / "runs" / "keep", config, resume=False)
    if not run.config_path.exists():
        run.write_config(config)
    tracker = Tracker(run, config)
    tracker.start()
    other = Tracker(open_run_dir(tmp_path / "runs" / "other", config, resume=False)[0], config)
    other.start()
    other.log_checkpoint(_checkpoint(tmp_path / "other-checkpoints", 1))  # another run's model: never touched
    for step in (1, 2, 3, 4):
        tracker.log_checkpoint(_checkpoint(run.checkpoint_dir, step))
    tracker.finish("FINISHED")

    client = mlflow.MlflowClient(tracker.tracking_uri)
    kept = run_checkpoint_models(client, tracker.experiment_id, tracker.run_id)
    assert [m.params["step"] for m in kept] == (["3", "4"] if keep == 2 else ["1", "2", "3", "4"])
    for model in kept:
        assert _artifact_files(model.artifact_location), model.params
    everything = client.search_logged_models([tracker.experiment_id])
    others = [m for m in everything if m.source_run_id == other.run_id]
    assert len(others) == 1 and _artifact_files(others[0].artifact_location)
    root = Path(tracker._artifact_root)
    exports = [p for p in root.rglob("model.safetensors")]
    assert len(exports) == (2 if keep == 2 else 4) + 1  # this run's kept models, and the other run's


def test_the_estimate_matches_what_a_checkpoint_and_a_logged_model_hold() -> None:
    config = build_config("qwen2.5-coder-7b")
    guess = estimate(config, 7_615_616_512)
    # a bf16 export is 15.2 GB (the 15 GB logged model); the fp32 training state (3 copies) beside it
    assert 15e9 < guess.logged_model_bytes / disk_use.SAFETY_FACTOR < 15.5e9
    assert 106e9 < guess.checkpoint_bytes / disk_use.SAFETY_FACTOR < 108e9


@pytest.mark.parametrize(("preset", "dtype", "checkpoint", "export"), [
    ("tiny", "float32", 67.8e6, 16.4e6),  # 3.22 M fp32 parameters
    ("cpu", "bfloat16", 2.059e9, 329.2e6),  # SmolLM2-135M, bf16 export, fp32 training state
])
def test_the_estimate_covers_measured_checkpoints(preset: str, dtype: str, checkpoint: float, export: float) -> None:
    """Sizes of real checkpoints of the tiny and cpu presets (benchmarks/disk_use.py), tokenizer
    files included; the logged model is a copy of the export."""
    from azr.ops.model_facts import model_facts

    config = build_config(preset, overrides=[f"model.dtype={dtype}"])  # the dtype they were measured in
    facts = model_facts(config.model.name_or_path)
    guess = estimate(config, facts.parameters(), tied=facts.vocab * facts.hidden if facts.tied_embeddings else 0)
    # never below what was written; above it by the safety factor, and for the tiny model by its
    # tied embedding, which its export (unlike the bundled model's) stores once
    assert checkpoint <= guess.checkpoint_bytes <= 1.5 * checkpoint
    assert export <= guess.logged_model_bytes <= 2 * export


Usage = namedtuple("Usage", "total used free")


def test_a_run_that_cannot_fit_is_refused_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = build_config("qwen2.5-coder-7b")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 50 * 2**30, 50 * 2**30))
    with pytest.raises(DiskSpaceError, match=r"needs at least .* GiB .* only 50.0 GiB is free") as refused:
        check_before_start(config, tmp_path / "run", tmp_path / "mlartifacts", 7_615_616_512)
    assert "trainer.keep_checkpoints" in str(refused.value)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**13, 0, 420 * 2**30))
    warnings = check_before_start(config, tmp_path / "run", tmp_path / "mlartifacts", 7_615_616_512)
    assert warnings and "may fill up" in warnings[0]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**14, 0, 10**14))
    assert check_before_start(config, tmp_path / "run", tmp_path / "mlartifacts", 7_615_616_512) == []


def test_azr_train_refuses_a_run_the_disk_cannot_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flows.entry import app

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 2**30, 2**30))
    result = CliRunner().invoke(app, ["train", "-p", "qwen2.5-coder-7b", "--run-dir", str(tmp_path / "run"),
                                      "--ignore-memory-plan"], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "1.0 GiB is free" in " ".join(result.stderr.split()) and not (tmp_path / "run").exists()


def test_a_checkpoint_that_would_fill_the_disk_is_warned_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from azr.pipeline import context as resources

    heard: list[tuple[str, dict]] = []
    resources.set_event_hook(lambda event, data: heard.append((event, data)))
    try:
        root = tmp_path / "checkpoints"
        assert disk_use.warn_before_checkpoint(root) is None  # nothing measured yet
        _checkpoint(root, 1, size=10_000)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**6, 10**6 - 12_000, 12_000))
        message = disk_use.warn_before_checkpoint(root)
        assert message and "disk nearly full" in message and "the next checkpoint" in message
        assert heard == [("warning", {"message": message})]
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 10**9))
        assert disk_use.warn_before_checkpoint(root) is None
    finally:
        resources.set_event_hook(None)
