"""`azr train`'s options on resume, checked before Prefect starts: changes apply to the run's own
config (not to a preset), a resume that would end before the iterations already done is refused
without touching config.yaml, `--force` needs `--resume`, and Prefect's drain-at-exit chatter
stays out of a failed run's output. (The flow itself is replaced by a recorder in one test:
what is checked is the CLI's resolution of the settings it hands the flow.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from azr.selfplay.buffer import Buffers
from azr.pipeline.buffer_log import commit_step, write_initial
from flows.entry import app
from azr.config.loading import build_config
from azr.pipeline.run_dir import config_differences, open_run_dir

runner = CliRunner()


def _run_with_commits(root: Path, done: int, iterations: int = 2) -> Path:
    """A run directory whose buffer log has `done` committed iterations (empty ones)."""
    config = build_config("tiny", overrides=[f"trainer.iterations={iterations}"])
    run, config = open_run_dir(root, config, resume=False)
    buffers = Buffers.initial(config.buffer, config.seed)
    write_initial(buffers, run.buffer_dir)
    for step in range(1, done + 1):
        commit_step(buffers, run.buffer_dir, step, {})
    return run.config_path


def test_force_without_resume_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--preset", "tiny", "--force", "--run-dir", str(tmp_path / "new")])
    assert result.exit_code == 2
    assert "--force only applies to --resume" in result.output
    assert not (tmp_path / "new").exists()


def test_resume_to_fewer_iterations_than_done_is_refused(tmp_path: Path) -> None:
    config_path = _run_with_commits(tmp_path / "runs" / "two", done=2)
    before = config_path.read_bytes()
    for args in (["--iterations", "1"], ["--set", "trainer.iterations=1", "--force"]):
        result = runner.invoke(app, ["train", "--resume", str(config_path.parent), *args], env={"COLUMNS": "300"})
        assert result.exit_code == 2, result.output
        assert "already has 2 iterations done" in result.output and "cannot end at iteration 1" in result.output
        assert config_path.read_bytes() == before  # not rewritten to fewer iterations


def test_changes_on_resume_apply_to_the_runs_own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = _run_with_commits(tmp_path / "runs" / "one", done=1, iterations=3)
    stored = build_config("tiny", overrides=["trainer.iterations=3"])
    handed: dict[str, Any] = {}

    def recorder(**kwargs: Any) -> dict:
        handed.update(kwargs)
        raise SystemExit(0)

    import flows.server_lifetime
    import flows.training

    monkeypatch.setattr(flows.training, "train_flow", recorder)
    monkeypatch.setattr(flows.server_lifetime, "bind_temporary_server", lambda: None)
    result = runner.invoke(app, ["train", "--resume", str(config_path.parent), "--set", "rollout.batch_size=3"])
    assert result.exit_code == 0, result.output
    assert handed["resume"] is True and handed["config"].name == "tiny"
    assert config_differences(stored, handed["config"]) == ["rollout.batch_size: 2 -> 3"]  # not 14 cpu-preset lines


def test_prefect_queue_drain_messages_are_quiet_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's EventsWorker says "Still processing items" through a logger outside "prefect"
    while it drains at exit; after an early `azr train` error that was the last line shown."""
    from flows.train_command import _quiet_output

    for key in ("PREFECT_LOGGING_LEVEL", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                "TOKENIZERS_PARALLELISM"):
        monkeypatch.setenv(key, "")  # restored (or removed) after the test: _quiet_output sets them
        monkeypatch.delenv(key)
    for name in ("EventsWorker", "APILogWorker"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    _quiet_output()
    events = logging.getLogger("EventsWorker")
    assert not events.isEnabledFor(logging.WARNING) and events.isEnabledFor(logging.ERROR)


def test_a_forced_change_is_tagged_on_the_mlflow_run(tmp_path: Path) -> None:
    """MLflow params cannot change; after `--force` the run's page shows each changed setting as
    a tag (old -> new, from which iteration), and the params keep what the run started with."""
    from azr.pipeline.mlflow_run import Tracker

    config = build_config("tiny", overrides=["trainer.iterations=3", "tracking.system_metrics=false"])
    run, config = open_run_dir(tmp_path / "run", config, resume=False)
    run.write_config(config)
    first = Tracker(run, config)
    first.start()
    first.finish("KILLED")
    changed = build_config("tiny", overrides=["trainer.iterations=3", "tracking.system_metrics=false",
                                              "rollout.batch_size=3"])
    run.write_config(changed)
    second = Tracker(run, changed)
    second.start()
    second.log_config(since_step=2)
    second.finish("FINISHED")
    data = second.client.get_run(second.run_id).data
    assert data.params["rollout.batch_size"] == "2"
    assert data.tags["azr.changed.rollout.batch_size"] == "2 -> 3 (from iteration 2)"
    assert not [key for key in data.tags if key.startswith("azr.changed.") and key != "azr.changed.rollout.batch_size"]
