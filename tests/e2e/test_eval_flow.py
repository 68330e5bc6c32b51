"""The Prefect evaluation flow end to end (ephemeral Prefect server, tiny random model), in a
fresh process with its own PREFECT_HOME so no Prefect state leaks between tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "eval" / "cruxeval_mini.jsonl"

SCRIPT = """
import json, sys
from flows.evaluation import evaluate_flow
metrics = evaluate_flow(
    benchmark="cruxeval-i", model="tiny-random", data=sys.argv[1], limit=2, preset="tiny",
    overrides=["sandbox.timeout_s=3"], max_new_tokens=3, out_dir=sys.argv[2],
)
print("METRICS" + json.dumps(metrics))
"""


def test_the_flow_runs_the_stages_and_logs(tmp_path: Path, bundled_copy: Path) -> None:
    from azr.engine.models.gguf import CACHE_ENV

    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        CACHE_ENV: os.environ[CACHE_ENV],
    }
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(FIXTURE), str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("METRICS"))
    metrics = json.loads(line.removeprefix("METRICS"))
    assert metrics["eval/cruxeval_i/problems"] == 2.0
    frame = pd.read_parquet(out / "results.parquet")
    assert list(frame["id"]) == ["crux_0", "crux_1"]
    assert metrics["eval/cruxeval_i/accuracy"] == frame["correct"].mean()
    assert json.loads((out / "mlflow.json").read_text())["tracking_uri"] == f"sqlite:///{out / 'mlflow.db'}"


SUITE_SCRIPT = """
import json, sys
from flows.evaluation import evaluate_flow
metrics = evaluate_flow(
    benchmark="paper", benchmarks=["mbpp-plus", "amc23"], model="tiny-random", data_dir=sys.argv[1], limit=1,
    preset="tiny", max_new_tokens=3, out_dir=sys.argv[2],
)
print("METRICS" + json.dumps(metrics))
"""


def test_the_flow_runs_a_part_of_the_paper_suite(tmp_path: Path, bundled_copy: Path) -> None:
    from azr.engine.models.gguf import CACHE_ENV
    from tests.support.paper_fixtures import write_data_dir

    data = write_data_dir(tmp_path / "data")
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        CACHE_ENV: os.environ[CACHE_ENV],
    }
    out = tmp_path / "suite"
    result = subprocess.run(
        [sys.executable, "-c", SUITE_SCRIPT, str(data), str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("METRICS")).removeprefix("METRICS"))
    assert {"eval/paper/code_avg", "eval/paper/math_avg", "eval/paper/total", "eval/amc23/pass_at_1"} <= set(metrics)
    table = json.loads((out / "table.json").read_text())
    assert [row["benchmark"] for row in table["rows"]] == ["mbpp-plus", "amc23"]
    assert len(pd.read_parquet(out / "results.parquet")) == 2
