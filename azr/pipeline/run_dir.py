"""The run directory: where a training run keeps its config, stage files, buffer and
checkpoints, and how a killed run is found again.

    RUN_DIR/config.yaml                 the run's configuration (resume compares against it)
    RUN_DIR/run.json                    MLflow run id, tracking URI, experiment
    RUN_DIR/iterations/NNNNNN/          the stages' files (registry.StageFile), metrics.json, timings.json
    RUN_DIR/buffer/                     the append-only task buffer log
    RUN_DIR/checkpoints/                policy checkpoints (complete when marked)

The default MLflow store is a SQLite file beside the run directory, with artifacts in a known
folder next to it, so a laptop run needs no server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from azr.pipeline.atomic_io import atomic_write_json, atomic_write_text
from azr.config.schema import AZRConfig
from azr.config.loading import ConfigError, config_to_yaml, undecodable
from azr.pipeline.registry import LAST_STAGE, Stage


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def info_path(self) -> Path:
        return self.root / "run.json"

    @property
    def buffer_dir(self) -> Path:
        return self.root / "buffer"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def iteration_dir(self, step: int) -> Path:
        return self.root / "iterations" / f"{step:06d}"

    def stage_path(self, step: int, name: str) -> Path:
        return self.iteration_dir(step) / name

    def stage_done(self, step: int, stage: Stage) -> bool:
        return all(self.stage_path(step, name).exists() for name in stage.files)

    def iteration_done(self, step: int) -> bool:
        return self.stage_done(step, LAST_STAGE)

    def steps(self) -> list[int]:
        """Iterations that have a directory, ascending."""
        base = self.root / "iterations"
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())

    def completed_steps(self) -> list[int]:
        return [s for s in self.steps() if self.iteration_done(s)]

    # ------------------------------------------------------------------------ config, info

    def write_config(self, config: AZRConfig) -> None:
        atomic_write_text(self.config_path, config_to_yaml(config))

    def read_config(self) -> AZRConfig:
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
            return AZRConfig.model_validate(data)
        except OSError as exc:
            raise RunDirError(f"{self.root} is not a run directory: cannot read {self.config_path.name} ({exc.strerror})") from exc
        except UnicodeDecodeError as exc:
            raise RunDirError(
                f"{self.config_path} is damaged ({undecodable(exc)}): restore the run's config.yaml from a "
                "copy, or start a new run"
            ) from exc
        except (yaml.YAMLError, ValidationError) as exc:
            raise RunDirError(f"{self.config_path} is damaged or from an incompatible version: {exc}") from exc

    def read_info(self) -> dict[str, Any]:
        try:
            return json.loads(self.info_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{self.info_path} is unreadable: {exc}") from exc

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.info_path, info)

    def read_json(self, step: int, name: str) -> dict[str, Any]:
        path = self.stage_path(step, name)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def record_timing(self, step: int, stage: str, seconds: float) -> None:
        timings = self.read_json(step, "timings.json")
        timings[stage] = round(seconds, 4)
        atomic_write_json(self.stage_path(step, "timings.json"), timings)


def default_tracking(run: RunDir) -> tuple[str, Path]:
    """SQLite store and artifact folder beside the run directory (docs/prefect-and-mlflow.md)."""
    parent = run.root.resolve().parent
    return f"sqlite:///{parent / 'mlflow.db'}", parent / "mlartifacts"


def config_differences(old: AZRConfig, new: AZRConfig) -> list[str]:
    """Settings that differ, as 'key: old -> new' lines (ignoring the iteration count)."""
    before, after = old.flatten(), new.flatten()
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and key != "trainer.iterations"
    ]


def open_run_dir(root: Path, config: AZRConfig | None, *, resume: bool, force: bool = False) -> tuple[RunDir, AZRConfig]:
    """A new run directory for `config`, or an existing one to resume.

    Resuming keeps the stored config; a different config is refused unless `force`. A resumed
    run's config.yaml is not touched here: the caller writes the new settings once the run has
    really started with them (`RunDir.write_config`), so a resume that fails (a model that
    does not exist) leaves the run as it was.
    """
    run = RunDir(Path(root))
    if resume:
        if not run.config_path.exists():
            raise RunDirError(f"cannot resume {root}: it has no config.yaml, so it is not a run directory")
        stored = run.read_config()
        if config is None:
            return run, stored
        differences = config_differences(stored, config)
        if differences and not force:
            raise ConfigError(
                f"the run in {root} was started with other settings ({'; '.join(differences)}); "
                "resume without --preset/--config/--set, or pass --force to continue it with the new settings"
            )
        return run, config
    if config is None:
        raise RunDirError("a new run needs a configuration")
    if run.root.exists() and any(run.root.iterdir()):
        raise RunDirError(
            f"{root} already exists and is not empty; choose another --run-dir, or continue that run with --resume"
        )
    run.root.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    return run, config
