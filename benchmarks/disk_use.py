"""Disk a training run writes per iteration: its run directory and its MLflow store.

Trains `--iterations` iterations of a preset into a fresh folder (or measures a finished run
with `--run-dir`), then prints the bytes of: the stage files per iteration (mean, min, max),
the checkpoints kept, the buffer, MLflow's run artifacts per iteration (samples, the Parquet
files of logged iterations, config), each logged model, and the SQLite store. These are the
figures docs/benchmarks.md ("Disk use of a run") quotes; sizes are file sizes (du --apparent-size), exact, not timed.

    python benchmarks/disk_use.py --preset tiny --iterations 6 -s tracking.log_checkpoint_every=2
    python benchmarks/disk_use.py --run-dir runs/cpu-20261201-1100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _mib(size: float) -> str:
    return f"{size / 2**20:.2f} MiB"


def measure(run_dir: Path) -> dict[str, object]:
    """Bytes per part of a finished run (its MLflow store is the default one beside it)."""
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    iterations = sorted(p for p in (run_dir / "iterations").iterdir() if p.is_dir())
    per_iteration = [_bytes(p) for p in iterations]
    artifacts = run_dir.resolve().parent / "mlartifacts" / info["experiment"]
    run_artifacts = artifacts / info["mlflow_run_id"] / "artifacts"
    models = [m for m in (artifacts / "models").iterdir()] if (artifacts / "models").is_dir() else []
    model_sizes = [_bytes(m) for m in models]
    return {
        "iterations": len(iterations),
        "stage_files_per_iteration": sum(per_iteration) / max(len(per_iteration), 1),
        "stage_files_min_max": (min(per_iteration, default=0), max(per_iteration, default=0)),
        "checkpoints": _bytes(run_dir / "checkpoints"),
        "checkpoints_kept": len([p for p in (run_dir / "checkpoints").glob("step-*")]),
        "buffer": _bytes(run_dir / "buffer"),
        "run_dir_total": _bytes(run_dir),
        "mlflow_run_artifacts_per_iteration": _bytes(run_artifacts) / max(len(iterations), 1),
        "logged_models_with_files": sum(1 for size in model_sizes if size > 0),
        "logged_models_total": len(models),
        "logged_model_size": max(model_sizes, default=0),
        "mlflow_artifacts_total": _bytes(artifacts),
        "mlflow_db": _bytes(run_dir.resolve().parent / "mlflow.db"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("-s", "--set", action="append", default=[], dest="overrides")
    parser.add_argument("--run-dir", type=Path, help="measure this finished run instead of training one")
    args = parser.parse_args()
    run_dir = args.run_dir
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="azr-disk-")) / "runs" / args.preset
        command = [sys.executable, "-m", "flows.entry", "train", "-p", args.preset, "--iterations", str(args.iterations),
                   "--run-dir", str(run_dir), *[x for o in args.overrides for x in ("-s", o)]]
        subprocess.run(command, check=True, env={**os.environ, "COLUMNS": "120"}, stdout=subprocess.DEVNULL)
    figures = measure(run_dir)
    print(f"run {run_dir}: {figures['iterations']} iterations")
    low, high = figures["stage_files_min_max"]
    print(f"  stage files per iteration     {_mib(figures['stage_files_per_iteration'])} (min {_mib(low)}, max {_mib(high)})")
    print(f"  checkpoints ({figures['checkpoints_kept']} kept)           {_mib(figures['checkpoints'])}")
    print(f"  buffer                        {_mib(figures['buffer'])}")
    print(f"  run directory in all          {_mib(figures['run_dir_total'])}")
    print(f"  MLflow run artifacts / iter.  {_mib(figures['mlflow_run_artifacts_per_iteration'])}")
    print(f"  logged models                 {figures['logged_models_with_files']} with files of "
          f"{figures['logged_models_total']} logged, {_mib(figures['logged_model_size'])} each")
    print(f"  MLflow artifacts in all       {_mib(figures['mlflow_artifacts_total'])}")
    print(f"  MLflow SQLite store           {_mib(figures['mlflow_db'])}")


if __name__ == "__main__":
    main()
