"""A failure inside the engine, seen as a user sees it: `azr train --resume RUN` where RUN's
config.yaml was replaced by a valid config for another model. The rank fails to load the
checkpoint; the user reads the rank's own reason and what to do, never accelerate's
CalledProcessError traceback (the bad-input harness's finding), and no engine process is left."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from azr.config.loading import build_config, config_to_yaml
from tests.integration.test_bad_input import _save_model


@pytest.mark.timeout(1200)  # two runs of the tiny preset; slow when the machine is shared
def test_resume_with_another_models_settings_says_so_without_a_traceback(tmp_path: Path, tokenizer: typing.Any) -> None:
    """The harness's case: a run whose config.yaml was replaced by a valid config for another
    model. The engine's rank fails to load the checkpoint; the user reads the rank's reason
    (not accelerate's CalledProcessError) and what to do, and no engine process is left."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "COLUMNS": "400", "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [sys.executable, "-m", "flows.entry", "train"]
    first = subprocess.run([*command, "--preset", "tiny", "--iterations", "1", "--run-dir", str(run_dir)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    wider = _save_model(tmp_path / "wider", tokenizer, hidden=128)
    other = build_config("tiny", overrides=[f"model.name_or_path={wider}", "trainer.iterations=2"])
    (run_dir / "config.yaml").write_text(config_to_yaml(other), encoding="utf-8")
    second = subprocess.run([*command, "--resume", str(run_dir)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    output = second.stdout + second.stderr
    message = " ".join(second.stderr.split())
    assert second.returncode in (1, 2), output
    assert "Traceback" not in output and "CalledProcessError" not in output, output
    assert "Size mismatch" in message and "holds another model" in message and str(wider) in message
    assert "starting" not in second.stdout  # no progress bar below an early error
    leftover = subprocess.run(["pgrep", "-f", f"azr.engine.rank.service --run-dir {run_dir}"], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
