"""Bad input the issue found accepted, or answered with a traceback, each reproduced first:
every one is now a clear refusal (what was wrong, what to do), a non-zero exit code and no
traceback, or a note where nothing is wrong but nothing happens."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from flows.entry import app
from azr.config.schema import AZRConfig
from azr.config.loading import ConfigError, build_config

runner = CliRunner()


def _refused(args: list[str], *needles: str, code: int = 2) -> str:
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    message = " ".join(result.stderr.split())
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "error:" in message
    for needle in needles:
        assert needle in message, message
    return message


# ------------------------------------------------------------------------------- settings


def test_an_empty_preset_name_is_refused_not_the_default() -> None:
    _refused(["config", "show", "--preset", ""], "--preset is empty", "cpu", "tiny")
    _refused(["train", "--preset", ""], "--preset is empty")
    _refused(["plan", "--preset", ""], "--preset is empty")
    with pytest.raises(ConfigError, match="--preset is empty"):
        build_config(" ")


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ("rollout.batch_size=1180591620717411303424", "rollout.batch_size"),
        ("rollout.max_new_tokens=100000000000", "rollout.max_new_tokens"),
        ("trainer.iterations=10000000000", "trainer.iterations"),
        ("rollout.mc_samples=100000", "rollout.mc_samples"),
        ("sandbox.timeout_s=1e30", "sandbox.timeout_s"),
        ("engine.update_timeout_s=99999999999", "engine.update_timeout_s"),
        ("seed=-1", "seed"),
        ("trainer.learning_rate=.inf", "trainer.learning_rate"),
        ("trainer.learning_rate=.nan", "trainer.learning_rate"),
        ("trainer.adam_betas=[0.9, 1.5]", "trainer.adam_betas"),
    ],
)
def test_out_of_range_values_are_refused(override: str, setting: str) -> None:
    _refused(["config", "show", "--preset", "tiny", "--set", override], setting)


@pytest.mark.parametrize(
    "override",
    ["rollout.batch_size=true", "trainer.learning_rate=false", "seed=true", "rollout.seed=true",
     "trainer.adam_betas=[true, 0.99]", "tasks.output_max_chars=true"],
)
def test_booleans_are_not_numbers(override: str) -> None:
    _refused(["config", "show", "--preset", "tiny", "--set", override], "a boolean is not a number",
             override.split("=")[0])


def test_numbers_and_booleans_where_they_belong_still_work() -> None:
    config = build_config("tiny", overrides=["rollout.batch_size=4096", "model.gradient_checkpointing=false",
                                             "trainer.learning_rate=1.0e-6", "rollout.seed=7", "trainer.processes=null"])
    assert config.rollout.batch_size == 4096 and config.model.gradient_checkpointing is False
    assert config.rollout.seed == 7 and config.trainer.processes is None


def _numeric_fields(model: type[BaseModel] = AZRConfig, prefix: str = "") -> typing.Iterator[tuple[str, typing.Any]]:
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation) or (field.annotation,)
        sections = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if sections:
            yield from _numeric_fields(sections[0], f"{prefix}{name}.")
        elif field.annotation in (int, float) or set(args) & {int, float}:
            yield prefix + name, field


def test_every_number_setting_has_an_upper_bound_and_the_presets_fit_them() -> None:
    from azr.config.loading import preset_names

    unbounded = [name for name, field in _numeric_fields()
                 if not any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata)]
    assert unbounded == ["trainer.adam_betas"]  # a pair: each checked in [0, 1) by its validator
    for preset in preset_names():
        build_config(preset)


# ------------------------------------------------------------------------------- YAML and text


def test_duplicate_yaml_keys_are_refused_with_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("rollout:\n  batch_size: 4\n  temperature: 0.5\n  batch_size: 8\n", encoding="utf-8")
    _refused(["config", "show", "--config", str(config)], "duplicate key 'batch_size' on line 4", "line 2")
    config.write_text("trainer:\n  iterations: 2\ntrainer:\n  learning_rate: 1.0e-6\n", encoding="utf-8")
    _refused(["config", "show", "--config", str(config)], "duplicate key 'trainer' on line 3")
    _refused(["config", "show", "--set", "eval.data={a: x.jsonl, a: y.jsonl}"], "duplicate key 'a'")
    from azr.config.loading import load_yaml

    assert load_yaml("a: 1\nb: {c: 2}\n") == yaml.safe_load("a: 1\nb: {c: 2}\n")


def test_a_config_file_that_is_not_utf8_is_one_paragraph(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes(b"rollout:\n  batch_size: 4\n  # caf\xe9\n")
    _refused(["config", "show", "--config", str(config)], "not UTF-8", "byte 0xe9 on line 3")


def test_a_run_config_that_is_not_utf8_is_one_paragraph(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_bytes(b"name: tiny\n\xff\xfe\n")
    _refused(["runs", "show", str(run_dir)], "config.yaml is damaged", "byte 0xff on line 2")


def test_parse_input_that_is_not_utf8_is_one_paragraph(tmp_path: Path) -> None:
    response = tmp_path / "response.txt"
    response.write_bytes(b"<answer>\x80</answer>")
    _refused(["parse", str(response), "--group", "deduction_solve"], "not UTF-8", "byte 0x80 on line 1")


def test_deeply_nested_yaml_and_json_are_clear_errors(tmp_path: Path) -> None:
    deep = "[" * 20000 + "]" * 20000
    config = tmp_path / "deep.yaml"
    config.write_text(f"rollout: {deep}\n", encoding="utf-8")
    _refused(["config", "show", "--config", str(config)], "nested too deeply")
    _refused(["config", "show", "--set", f"tasks.types={deep}"], "nested too deeply")

    from azr.eval.benchmarks.jsonl import parse_jsonl
    from azr.selfplay.seed_tasks import SeedFileError, load_io_seeds

    content = parse_jsonl('{"id": 1}\n' + deep + "\n")
    assert [r.number for r in content.rows] == [1] and "nested too deeply" in content.bad[0].reason
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(deep + "\n", encoding="utf-8")
    with pytest.raises(SeedFileError, match="nested too deeply"):
        load_io_seeds(seeds, 10)


# ------------------------------------------------------------------------------- rich markup


def test_the_users_text_is_echoed_as_given_not_eaten_as_markup(tmp_path: Path) -> None:
    message = _refused(["config", "show", "--set", "tasks.types=[deduction,nosuch]"])
    assert "--set tasks.types=[deduction,nosuch]" in message and "'nosuch'" in message
    odd = tmp_path / "[bold]x[/bold]"
    message = _refused(["config", "show", "--config", str(odd / "run.yaml")], "cannot read config file")
    assert "[bold]x[/bold]" in message

    from azr.config.loading import config_to_yaml

    run_dir = tmp_path / "runs" / "[red]run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(build_config("tiny")), encoding="utf-8")
    listed = runner.invoke(app, ["runs", "list", str(tmp_path / "runs")], env={"COLUMNS": "400"})
    assert listed.exit_code == 0 and "[red]run" in listed.stdout, listed.output


# ------------------------------------------------------------------------------- sandbox batch


def _program(task_id: object, value: str) -> str:
    return json.dumps({"id": task_id, "code": "def f(x):\n    return x", "input": value})


def test_sandbox_batch_refuses_duplicate_ids_before_running(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join([_program("a", "1"), _program("b", "2"), _program("a", "3")]) + "\n", encoding="utf-8")
    out = tmp_path / "results.jsonl"
    _refused(["sandbox", "batch", str(tasks), "-o", str(out)], "id 'a' is on line 1 and again on line 3")
    assert not out.exists()


def test_sandbox_batch_of_an_empty_file_says_so(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n  \n", encoding="utf-8")
    out = tmp_path / "results.jsonl"
    result = runner.invoke(app, ["sandbox", "batch", str(tasks), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "holds no tasks" in result.stderr and "nothing was run" in result.stderr
    assert out.read_text(encoding="utf-8") == ""


def test_sandbox_batch_output_that_cannot_be_written_is_refused_first(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(_program(1, "1") + "\n", encoding="utf-8")
    _refused(["sandbox", "batch", str(tasks), "-o", str(tmp_path)], "is a directory", "results.jsonl")
    _refused(["sandbox", "batch", str(tasks), "-o", str(tmp_path / "no" / "r.jsonl")], "does not exist")


def test_sandbox_batch_reports_a_too_deep_line_as_that_lines_error(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": 1, "code": "x", "input": ' + "[" * 100000 + "]" * 100000 + "}\n", encoding="utf-8")
    result = runner.invoke(app, ["sandbox", "batch", str(tasks)])
    assert result.exit_code == 0, result.output
    assert "nested too deeply" in json.loads(result.stdout)["error"]


# ------------------------------------------------------------------------------- eval --step


def _fake_checkpoint(root: Path, step: int) -> None:
    path = root / "checkpoints" / f"step-{step:08d}"
    (path / "export").mkdir(parents=True)
    (path / "export" / "config.json").write_text("{}", encoding="utf-8")
    (path / "meta.json").write_text(json.dumps({"step": step, "metadata": {}}), encoding="utf-8")
    (path / "COMPLETE").write_text(json.dumps({"step": step}), encoding="utf-8")


def test_eval_of_a_checkpoint_step_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    for step in (2, 4):
        _fake_checkpoint(run_dir, step)
    data = Path(__file__).parents[1] / "fixtures" / "eval" / "cruxeval_mini.jsonl"
    message = _refused(["eval", "run", "-b", "cruxeval-o", "--data", str(data), "-m", str(run_dir), "--step", "99",
                        "--out", str(tmp_path / "out"), "--no-mlflow"], "no complete checkpoint of step 99", "steps 2, 4")
    assert "--step" in message and not (tmp_path / "out").exists()

    from azr.eval.targets import resolve_target

    assert resolve_target(str(run_dir), 2).step == 2 and resolve_target(str(run_dir)).step == 4


# ------------------------------------------------------------------------------- advice after a failure


def test_resume_advice_only_where_a_resume_can_work(tmp_path: Path) -> None:
    from azr.ops.failure_advice import failure_advice, resumable
    from azr.pipeline.run_dir import open_run_dir

    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    error = NotADirectoryError(20, "Not a directory")
    for target in (a_file, Path("/proc/azr-run"), tmp_path / "never-created"):
        advice = failure_advice(error, target)
        assert "--resume" not in advice and "no run was started" in advice
    run, _ = open_run_dir(tmp_path / "run", build_config("tiny"), resume=False)
    if not (run.root / "config.yaml").exists():  # the config is written once the run has started
        run.write_config(build_config("tiny"))
    assert resumable(run.root)
    assert f"azr train --resume {run.root}" in failure_advice(OSError("disk"), run.root)
    assert "model.name_or_path" in failure_advice(OSError("no model"), run.root, model_problem=True)
    if os.geteuid() != 0:  # root may write anywhere
        run.root.chmod(0o500)
        try:
            assert not resumable(run.root) and "--resume" not in failure_advice(PermissionError(13, "denied"), run.root)
        finally:
            run.root.chmod(0o700)
    (run.root / "config.yaml").write_bytes(b"\xff")
    assert not resumable(run.root)


def test_train_into_a_file_is_refused_without_resume_advice(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    message = _refused(["train", "--preset", "tiny", "--run-dir", str(a_file)], "is a file, not a directory")
    assert "--resume" not in message


# ------------------------------------------------------------------------------- failures: their own reason, once


def _save_model(directory: Path, tokenizer: typing.Any, hidden: int = 64) -> Path:
    """A tiny random Llama (hidden width `hidden`) with the bundled tokenizer, as a model directory."""
    from transformers import LlamaForCausalLM

    from azr.engine.models.loading import tiny_config

    config = tiny_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.eos_token_id, tokenizer.eos_token_id)
    config.hidden_size, config.intermediate_size = hidden, 2 * hidden
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _header_too_large(path: Path) -> None:
    """A safetensors file whose header length is absurd (what a truncated download or a foreign file looks like)."""
    import struct

    path.write_bytes(struct.pack("<Q", 2**40) + b"x" * 64)


def test_a_garbage_safetensors_file_is_named_not_a_traceback(tmp_path: Path, tokenizer: typing.Any) -> None:
    model = _save_model(tmp_path / "model", tokenizer)
    _header_too_large(model / "model.safetensors")
    data = Path(__file__).parents[1] / "fixtures" / "eval" / "cruxeval_mini.jsonl"
    message = _refused(["eval", "run", "-b", "cruxeval-o", "--data", str(data), "-m", str(model), "--limit", "1",
                        "--out", str(tmp_path / "out"), "--no-mlflow", "--preset", "tiny"],
                       "cannot generate with", "SafetensorError", "header too large", code=1)
    assert "unexpected" not in message


def test_a_garbled_run_json_still_shows_the_run(tmp_path: Path) -> None:
    from azr.pipeline.run_dir import open_run_dir

    run, config = open_run_dir(tmp_path / "run", build_config("tiny"), resume=False)
    run.write_config(config)
    run.info_path.write_text("{garbled", encoding="utf-8")
    result = runner.invoke(app, ["runs", "show", str(run.root)], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    warning = " ".join(result.stderr.split())
    assert "run.json is unreadable" in warning and "MLflow run it names cannot be shown" in warning
    assert "preset tiny" in " ".join(result.stdout.split())


def test_an_unexpected_error_is_one_paragraph_and_its_traceback_a_file(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule holds for errors nobody foresaw: the reason on the terminal, the traceback kept."""
    import azr.pipeline.run_dir as run_dir_module
    from azr.pipeline.run_dir import open_run_dir

    run, config = open_run_dir(tmp_path / "run", build_config("tiny"), resume=False)
    run.write_config(config)

    def broken(self: typing.Any) -> list[int]:
        raise ZeroDivisionError("a bug far from the command")

    monkeypatch.setattr(run_dir_module.RunDir, "completed_steps", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    message = _refused(["runs", "show", str(run.root)], "ZeroDivisionError: a bug far from the command",
                       "an unexpected error", "please report it", code=1)
    saved = list((tmp_path / "tmp" / "azr-errors").glob("traceback-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in message
    assert "Traceback (most recent call last)" in saved[0].read_text(encoding="utf-8")


def test_a_launchers_wrapper_error_gives_way_to_the_childs_own_reason(tmp_path: Path) -> None:
    """What accelerate's launcher logs when a rank fails: the rank's traceback, then the
    launcher's CalledProcessError. The reason is the rank's line, from a real process chain."""
    import subprocess
    import sys

    from azr.ops.failure_advice import log_reason_or_tail, reason_in_log

    child = "raise ValueError('Size mismatch between saved torch.Size([4]) and current: torch.Size([8])')"
    launcher = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-c", launcher], stdout=out, stderr=subprocess.STDOUT, check=False)
    assert "CalledProcessError" in log.read_text(encoding="utf-8")
    assert reason_in_log(log) == "ValueError: Size mismatch between saved torch.Size([4]) and current: torch.Size([8])"
    assert "Traceback" not in log_reason_or_tail(log) and str(log) in log_reason_or_tail(log)
    killed = tmp_path / "killed.log"
    killed.write_text("loading weights 50%\nsome progress\n", encoding="utf-8")
    assert reason_in_log(killed) is None and "some progress" in log_reason_or_tail(killed)


def test_a_failed_checkpoint_load_is_the_ranks_reason(tmp_path: Path) -> None:
    """torch's CheckpointException derives from BaseException and prints every rank's traceback:
    the reason is the wrapped error's own line (the engine answers it instead of dying)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from azr.engine.rank.service import _failure_types
    from azr.ops.failure_advice import own_reason

    dcp.save({"w": torch.zeros(4)}, checkpoint_id=str(tmp_path / "ckpt"), no_dist=True)
    with pytest.raises(_failure_types()) as caught:
        dcp.load({"w": torch.zeros(8)}, checkpoint_id=str(tmp_path / "ckpt"), no_dist=True)
    assert isinstance(caught.value, CheckpointException)
    reason = own_reason(caught.value)
    assert "Size mismatch" in reason and "Traceback" not in reason and "\n" not in reason
