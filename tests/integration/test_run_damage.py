"""Damaged run directories: each damage is repaired on resume, ending equal to an undamaged
run, or refused with a message that names the file; never a traceback from deep inside, never
a silently different run.

One undamaged tiny run (3 iterations, in-process policies so that weights and optimizer state
can be compared) is built once for the module; each case copies it, damages the copy, resumes
it the way tests/integration/test_pipeline_stages.py does (open_resources, then the remaining stages) and
compares weights, optimizer state, buffer log, stage files, records and checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from azr.pipeline.buffer_log import committed_steps, load_buffer_log
from azr.config.loading import build_config
from azr.engine.rank.policy import Policy
from azr.pipeline.run_dir import RunDir, open_run_dir
from azr.pipeline.resume import RunStateError
from azr.pipeline.registry import STAGE_SCHEMAS
from azr.pipeline.stages import iteration_stages, run_iteration
from azr.pipeline.run import close_resources, finish_iteration, next_step, open_resources
from azr.sandbox import SandboxExecutor

pytestmark = pytest.mark.timeout(900)  # the first case also builds the baseline runs (a shared machine can be slow)

CONFIG = build_config("tiny", overrides=["trainer.iterations=3", "trainer.keep_checkpoints=2", "sandbox.timeout_s=3"])
LAST = CONFIG.trainer.iterations
PARTIAL_UNTIL = "mc_rollouts"
"""The partial run is killed after this stage of iteration 3 (its proposals and solutions exist)."""
TIMING_KEYS = {"seconds", "tokens_per_second", "weight_sync_s"}


@dataclass
class Baseline:
    full: Path
    """All iterations done."""
    partial: Path
    """Iterations 1-2 committed, iteration 3 killed after its solve stage."""
    parameters: list[torch.Tensor]
    optimizer: dict


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with SandboxExecutor.from_run_config(CONFIG) as ex:
        yield ex


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, executor: SandboxExecutor) -> Baseline:
    root = tmp_path_factory.mktemp("baseline")
    run, config = open_run_dir(root / "full", CONFIG, resume=False)
    res = open_resources(run, config, executor=executor, policy=Policy.create(config, cpu=True))
    for step in range(1, LAST + 1):
        run_iteration(res, step)
        finish_iteration(res, step)
    full = Baseline(run.root, root / "partial", _parameters(res.policy), _optimizer_state(res.policy))
    close_resources(res)
    partial, _ = open_run_dir(full.partial, CONFIG, resume=False)
    res = open_resources(partial, config, executor=executor, policy=Policy.create(config, cpu=True))
    for step in range(1, LAST):
        run_iteration(res, step)
        finish_iteration(res, step)
    for name, stage in iteration_stages(config):
        stage(res, LAST)
        if name == PARTIAL_UNTIL:
            break
    close_resources(res)
    return full


def _parameters(policy: Policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.unwrapped_model.parameters()]


def _optimizer_state(policy: Policy) -> dict:
    state = policy.optimizer.state_dict()["state"]
    return {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in entry.items()} for k, entry in state.items()}


# --------------------------------------------------------------------------- damages


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _wrong_schema(path: Path) -> None:
    pq.write_table(pa.table({"unrelated": [1, 2, 3]}), path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage{not json")


def _flip_byte(path: Path) -> None:
    """One bit flipped inside the data (what a bad disk or memory does): the size, the headers
    and the footer stay as they were. In a Parquet file, inside its first column's pages."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".parquet":
        column = pq.ParquetFile(path).metadata.row_group(0).column(0)
        start = column.dictionary_page_offset or column.data_page_offset
        where = start + column.total_compressed_size // 2
    else:
        where = len(data) // 2
    data[where] ^= 0x10
    path.write_bytes(bytes(data))


def _drop_optimizer(state_dir: Path) -> None:
    """A DCP index that lost its optimizer entries (the optimizer state is gone)."""
    metadata_path = state_dir / ".metadata"
    metadata = pickle.loads(metadata_path.read_bytes())  # our own test file: the checkpoint's index
    metadata.state_dict_metadata = {k: v for k, v in metadata.state_dict_metadata.items() if not k.startswith("optimizer.")}
    metadata.storage_data = {k: v for k, v in metadata.storage_data.items() if not k.fqn.startswith("optimizer.")}
    metadata_path.write_bytes(pickle.dumps(metadata))


def _delete(*names: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        for name in names:
            path = root / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return damage


def _on(name: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda root: damage(root / name)


IT1, IT2, IT3 = "iterations/000001", "iterations/000002", "iterations/000003"
CK2, CK3 = "checkpoints/step-00000002", "checkpoints/step-00000003"

REPAIRED = {
    # the iteration in progress: its damaged files are computed again
    "unfinished proposals 0-byte": ("partial", _on(f"{IT3}/proposals.parquet", _zero_bytes)),
    "unfinished validated truncated": ("partial", _on(f"{IT3}/validated.parquet", _truncate)),
    "unfinished solutions wrong schema": ("partial", _on(f"{IT3}/solutions.parquet", _wrong_schema)),
    "unfinished prompts wrong schema": ("partial", _on(f"{IT3}/propose_prompts.parquet", _wrong_schema)),
    "unfinished mc_rollouts 0-byte": ("partial", _on(f"{IT3}/mc_rollouts.parquet", _zero_bytes)),
    "update done, then its proposals 0-byte": ("full", lambda root: (  # killed after update.json, before the commit
        _delete(f"{IT3}/committed.json", f"{IT3}/metrics.json", "buffer/state/step_000003.json")(root),
        _zero_bytes(root / IT3 / "proposals.parquet"))),
    # lost updates: replayed from scored.parquet
    "lost update, last iteration": ("full", _delete(f"{IT3}/update.json", CK3)),
    "lost update, committed iteration": ("partial", _delete(f"{IT2}/update.json", CK2)),
    # the buffer log: rebuilt from the committed iterations' stage files
    "buffer state file deleted": ("partial", _delete("buffer/state/step_000001.json")),
    "buffer newest state deleted": ("full", _delete("buffer/state/step_000003.json")),
    "buffer folder deleted": ("partial", _delete("buffer")),
    "buffer rows truncated": ("full", _on("buffer/deduction/step_000002.parquet", _truncate)),
    # checkpoints: the newest intact one (or the initial weights) and the updates after it
    "checkpoint weights truncated": ("partial", _on(f"{CK2}/state/__0_0.distcp", _truncate)),
    "checkpoint export truncated": ("full", _on(f"{CK3}/export/model.safetensors", _truncate)),
    "checkpoint optimizer missing": ("full", _on(f"{CK3}/state", _drop_optimizer)),
    "checkpoint COMPLETE garbage": ("partial", _on(f"{CK2}/COMPLETE", _garbage)),
    "checkpoint RNG garbage": ("full", _on(f"{CK3}/state/rng-rank-0.pt", _garbage)),
    # a flipped bit: only the content checksums see it (the sha256 in COMPLETE, Parquet's page CRCs)
    "checkpoint weights bit flip": ("partial", _on(f"{CK2}/state/__0_0.distcp", _flip_byte)),
    "checkpoint export bit flip": ("full", _on(f"{CK3}/export/model.safetensors", _flip_byte)),
    "unfinished proposals bit flip": ("partial", _on(f"{IT3}/proposals.parquet", _flip_byte)),
    "buffer seed rows bit flip": ("full", _on("buffer/deduction/step_000000.parquet", _flip_byte)),
    # records of committed iterations
    "committed.json garbage": ("partial", _on(f"{IT2}/committed.json", _garbage)),
    "update.json garbage, replayed": ("full", lambda root: (_delete(CK3)(root), _garbage(root / IT3 / "update.json"))),
}

REFUSED = {
    "committed scored truncated": ("partial", _on(f"{IT1}/scored.parquet", _truncate), f"{IT1}/scored.parquet"),
    "committed scored bit flip": ("partial", _on(f"{IT1}/scored.parquet", _flip_byte), f"{IT1}/scored.parquet"),
    "committed proposals 0-byte": ("full", _on(f"{IT2}/proposals.parquet", _zero_bytes), f"{IT2}/proposals.parquet"),
    "committed validated wrong schema": ("partial", _on(f"{IT1}/validated.parquet", _wrong_schema), f"{IT1}/validated.parquet"),
    "replay needs a deleted scored": ("full", _delete(f"{IT3}/scored.parquet", CK3), f"{IT3}/scored.parquet"),
    "buffer rebuild needs deleted files": ("partial", _delete("buffer", f"{IT1}/validated.parquet"), f"{IT1}/validated.parquet"),
}


# ------------------------------------------------------------------------------ cases


def _copy(baseline: Baseline, which: str, target: Path) -> RunDir:
    shutil.copytree(baseline.full if which == "full" else baseline.partial, target)
    return RunDir(target)


def _resume_and_finish(run: RunDir, executor: SandboxExecutor) -> Policy:
    resumed, config = open_run_dir(run.root, None, resume=True)
    res = open_resources(resumed, config, executor=executor, policy=Policy.create(config, cpu=True))
    for step in range(next_step(resumed), LAST + 1):
        run_iteration(res, step)
        finish_iteration(res, step)
    close_resources(res)
    return res.policy


@pytest.mark.parametrize("case", sorted(REPAIRED))
def test_a_damage_is_repaired_to_the_undamaged_run(case: str, baseline: Baseline, executor: SandboxExecutor,
                                                   tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    which, damage = REPAIRED[case]
    run = _copy(baseline, which, tmp_path / "run")
    damage(run.root)
    with caplog.at_level(logging.WARNING):
        policy = _resume_and_finish(run, executor)
    assert any(r.levelno >= logging.WARNING for r in caplog.records), "a repair must not be silent"
    _assert_same_run(run, RunDir(baseline.full))
    for a, b in zip(baseline.parameters, _parameters(policy), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = _optimizer_state(policy)
    assert state.keys() == baseline.optimizer.keys()
    for key, entry in baseline.optimizer.items():
        for name, value in entry.items():
            torch.testing.assert_close(state[key][name], value, rtol=0, atol=0)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_damage_that_cannot_be_repaired_is_refused_naming_the_file(case: str, baseline: Baseline,
                                                                     executor: SandboxExecutor, tmp_path: Path) -> None:
    which, damage, named = REFUSED[case]
    run = _copy(baseline, which, tmp_path / "run")
    damage(run.root)
    before = _tree(run.root)
    resumed, config = open_run_dir(run.root, None, resume=True)
    with pytest.raises(RunStateError) as refused:
        open_resources(resumed, config, executor=executor, policy=Policy.create(config, cpu=True))
    message = str(refused.value)
    assert str(run.root / named) in message and ("restore" in message.lower() or "copy" in message.lower()), message
    assert _tree(run.root) == before, "a refusal must leave the run directory as it was"


def test_garbled_metrics_are_set_aside_and_computed_again(baseline: Baseline, executor: SandboxExecutor,
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = _copy(baseline, "partial", tmp_path / "run")
    _garbage(run.stage_path(2, "metrics.json"))
    resumed, config = open_run_dir(run.root, None, resume=True)
    with caplog.at_level(logging.WARNING):
        res = open_resources(resumed, config, executor=executor, policy=Policy.create(config, cpu=True))
    assert "metrics.json" in caplog.text and run.stage_path(2, "metrics.json.damaged").exists()
    finish_iteration(res, 2)  # the post-commit work of a resumed run writes it again
    close_resources(res)
    expected = json.loads(RunDir(baseline.partial).stage_path(2, "metrics.json").read_text())["metrics"]
    got = run.read_json(2, "metrics.json")["metrics"]
    assert got.keys() == expected.keys()
    measured = {k for k in expected if k.startswith(("monitor/rss", "monitor/gpu"))}  # this process now
    assert {k: v for k, v in got.items() if k not in measured} == pytest.approx(
        {k: v for k, v in expected.items() if k not in measured}, nan_ok=True)


# ---------------------------------------------------------------------------- compare


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _assert_same_run(run: RunDir, reference: RunDir) -> None:
    for step in range(1, LAST + 1):
        for name in STAGE_SCHEMAS:
            ours, theirs = pq.read_table(run.stage_path(step, name)), pq.read_table(reference.stage_path(step, name))
            exact = [c for c in theirs.column_names if c != "behaviour_logprobs"]
            assert ours.select(exact).equals(theirs.select(exact)), (step, name)
            if "behaviour_logprobs" in theirs.column_names:  # a float measurement: its last bits follow the decode batch
                for got, want in zip(ours["behaviour_logprobs"].to_pylist(), theirs["behaviour_logprobs"].to_pylist()):
                    assert (got is None) == (want is None) and (got is None or got == pytest.approx(want, abs=1e-4)), (step, name)
        assert run.read_json(step, "committed.json") == reference.read_json(step, "committed.json"), step
        got, want = run.read_json(step, "update.json"), reference.read_json(step, "update.json")
        noisy = (*TIMING_KEYS, "off_policy")  # the gap diagnostics measure float noise of the behaviour log-probs
        assert {k: v for k, v in got.items() if k not in noisy} == {k: v for k, v in want.items() if k not in noisy}, step
        assert got.get("off_policy") == pytest.approx(want.get("off_policy"), abs=1e-5), step
    assert committed_steps(run.buffer_dir) == committed_steps(reference.buffer_dir) == list(range(LAST + 1))
    ours, theirs = load_buffer_log(run.buffer_dir, CONFIG.buffer), load_buffer_log(reference.buffer_dir, CONFIG.buffer)
    for task_type, buffer in theirs.buffers.items():
        assert ours[task_type].entries == buffer.entries and ours[task_type].added_per_step == buffer.added_per_step
    assert ours.rng.bit_generator.state == theirs.rng.bit_generator.state
    names = sorted(p.name for p in reference.checkpoint_dir.iterdir())
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == names
    for name in names:
        ours_w = load_file(run.checkpoint_dir / name / "export" / "model.safetensors")
        theirs_w = load_file(reference.checkpoint_dir / name / "export" / "model.safetensors")
        assert ours_w.keys() == theirs_w.keys()
        for key, value in theirs_w.items():
            torch.testing.assert_close(ours_w[key], value, rtol=0, atol=0)


def test_runs_list_and_show_mark_a_run_with_garbled_metrics(baseline: Baseline, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.entry import app

    intact, damaged = _copy(baseline, "full", tmp_path / "runs" / "intact"), _copy(baseline, "full", tmp_path / "runs" / "damaged")
    _garbage(damaged.stage_path(LAST, "metrics.json"))
    runner, env = CliRunner(), {"COLUMNS": "250"}
    listed = runner.invoke(app, ["runs", "list", str(tmp_path / "runs")], env=env)
    assert listed.exit_code == 0 and listed.exception is None, listed.output
    assert str(intact.root) in listed.output and "complete" in listed.output
    assert str(damaged.root) in listed.output and "damaged metrics.json" in listed.output
    shown = runner.invoke(app, ["runs", "show", str(damaged.root)], env=env)
    assert shown.exit_code == 0 and shown.exception is None and "metrics.json damaged" in shown.output, shown.output
    one = runner.invoke(app, ["runs", "show", str(damaged.root), "--iteration", str(LAST)], env=env)
    assert one.exit_code == 0 and one.exception is None, one.output


# ---------------------------------------------------------------------------- azr runs verify


def _verify(root: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from flows.entry import app

    result = CliRunner().invoke(app, ["runs", "verify", str(root)], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_runs_verify_says_intact_repairable_or_not(baseline: Baseline, tmp_path: Path) -> None:
    """`azr runs verify` reads every checksum and changes nothing: an intact run, a flipped bit
    in a checkpoint (repaired by resume, named), one in a committed stage file (refused, named)."""
    code, output = _verify(baseline.full)
    assert code == 0 and "intact" in output and "3 checkpoints" not in output  # keep_checkpoints=2
    assert "2 checkpoints (2 with sha256 checksums, verified)" in output and "3 iterations" in output
    flipped = _copy(baseline, "full", tmp_path / "flipped")
    _flip_byte(flipped.root / CK3 / "export" / "model.safetensors")
    before = _tree(flipped.root)
    code, output = _verify(flipped.root)
    assert code == 1 and "can be repaired" in output and "model.safetensors differs from the sha256" in output
    assert _tree(flipped.root) == before
    refused = _copy(baseline, "partial", tmp_path / "refused")
    _flip_byte(refused.root / IT1 / "scored.parquet")
    code, output = _verify(refused.root)
    assert code == 1 and "cannot be repaired" in output and str(refused.root / IT1 / "scored.parquet") in output
