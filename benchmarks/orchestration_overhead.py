"""What Prefect, Parquet and MLflow cost on top of the work of an iteration.

The same iteration (same config, same starting weights and buffers, same sampling seeds) is
run twice per repetition: through the Prefect iteration flow plus the MLflow logging of the
training flow, and as the same stage functions called directly. The stage functions read and
write their Parquet files either way, so that I/O is timed separately and counted as overhead.
Prints the median of the repetitions.

    python benchmarks/orchestration_overhead.py [--preset cpu] [--runs 1] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pandas as pd  # noqa: E402

import azr.pipeline.stages as stages  # noqa: E402
from azr.config.loading import build_config  # noqa: E402
from azr.engine.rank.policy import Policy  # noqa: E402
from azr.pipeline.run_dir import open_run_dir  # noqa: E402
from azr.pipeline.run import finish_iteration, open_resources  # noqa: E402
from azr.sandbox import SandboxExecutor  # noqa: E402
from azr.pipeline.mlflow_run import Tracker  # noqa: E402

PARQUET_SECONDS = [0.0]


@contextmanager
def timed_parquet():
    """Count the time spent reading and writing stage Parquet files."""
    original_write, original_read = stages.write_parquet_atomic, pd.read_parquet

    def write(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            return original_write(*args, **kwargs)
        finally:
            PARQUET_SECONDS[0] += time.perf_counter() - started

    def read(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter()
        try:
            return original_read(*args, **kwargs)
        finally:
            PARQUET_SECONDS[0] += time.perf_counter() - started

    stages.write_parquet_atomic, stages.pd.read_parquet = write, read
    try:
        yield
    finally:
        stages.write_parquet_atomic, stages.pd.read_parquet = original_write, original_read


def warm_up() -> None:
    from prefect import flow

    @flow(name="azr-warm-up")
    def nothing() -> None:
        return None

    nothing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from flows.iteration import iteration_flow

    config = build_config(args.preset, overrides=[*args.overrides, "trainer.iterations=1"])
    workspace = Path(tempfile.mkdtemp(prefix="azr-overhead-"))
    policy = Policy.create(config)
    executor = SandboxExecutor.from_run_config(config)
    model_state = copy.deepcopy(policy.unwrapped_model.state_dict())
    optimizer_state = copy.deepcopy(policy.optimizer.state_dict())
    warm_up()  # Prefect's ephemeral server starts on first use: not part of an iteration
    results = {"flow": [], "direct": [], "parquet_flow": [], "parquet_direct": [], "stage_work": []}
    try:
        for repetition in range(args.runs):
            for path_kind in ("direct", "flow"):
                policy.unwrapped_model.load_state_dict(model_state)
                policy.optimizer.load_state_dict(optimizer_state)
                run, run_config = open_run_dir(workspace / f"{path_kind}-{repetition}", config, resume=False)
                res = open_resources(run, run_config, policy=policy, executor=executor)
                PARQUET_SECONDS[0] = 0.0
                with timed_parquet():
                    started = time.perf_counter()
                    if path_kind == "direct":
                        stages.run_iteration(res, 1)
                    else:
                        tracker = Tracker(run, run_config)
                        tracker.start()
                        iteration_flow(res, 1)
                        finish_iteration(res, 1, tracker)
                        tracker.finish("FINISHED")
                    results[path_kind].append(time.perf_counter() - started)
                if path_kind == "flow":  # the stage functions' own time inside this very run
                    results["stage_work"].append(sum(run.read_json(1, "timings.json").values()))
                results[f"parquet_{path_kind}"].append(PARQUET_SECONDS[0])
    finally:
        executor.close()
        shutil.rmtree(workspace, ignore_errors=True)

    flow_s, direct_s = statistics.median(results["flow"]), statistics.median(results["direct"])
    parquet_s = statistics.median(results["parquet_flow"])
    overhead = flow_s - direct_s + parquet_s
    print(f"preset {args.preset}, one iteration, median of {args.runs} run(s)")
    print(f"  through the flows (Prefect + Parquet + MLflow): {flow_s:8.2f} s")
    print(f"  stage functions called directly:               {direct_s:8.2f} s  (of which Parquet I/O {statistics.median(results['parquet_direct']):.2f} s)")
    print(f"  Parquet I/O inside the flow run:                {parquet_s:8.2f} s")
    print(f"  overhead (flow - direct + Parquet I/O):         {overhead:8.2f} s = {100 * overhead / flow_s:.1f}% of the iteration")
    # The two runs above differ by machine noise too; the same flow run's own accounting does not:
    # its wall time minus the time spent inside the stage functions, plus their Parquet I/O.
    work = statistics.median(results["stage_work"])
    inside = flow_s - work + parquet_s
    print(f"  same flow run: wall {flow_s:.2f} s, inside the stages {work:.2f} s -> Prefect + MLflow + Parquet "
          f"{inside:.2f} s = {100 * inside / flow_s:.1f}%")


if __name__ == "__main__":
    main()
