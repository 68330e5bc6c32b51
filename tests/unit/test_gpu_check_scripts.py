"""The one-shot GPU check scripts cannot run here (no GPU): they import, parse their arguments,
refuse clearly without a GPU, and their step runner enforces each step's time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = {"benchmarks/vllm_gpu_check.py": 1, "benchmarks/vllm_gpu_check_2gpu.py": 2}
TAG = "AZR-GPU-CHECK "


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


def _records(stdout: str) -> list[dict]:
    return [json.loads(line[len(TAG):]) for line in stdout.splitlines() if line.startswith(TAG)]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_names_the_steps_and_the_output(script: str) -> None:
    done = _run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "--model" in done.stdout and "--work" in done.stdout and "AZR-GPU-CHECK" in done.stdout


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_without_a_gpu_it_refuses_with_one_json_line(script: str) -> None:
    done = _run(script, env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2, done.stdout + done.stderr
    (record,) = _records(done.stdout)
    assert record["step"] == "gpus" and record["ok"] is False
    assert f"needs {SCRIPTS[script]} NVIDIA GPU(s) and finds 0" in record["error"]


def test_each_step_has_its_own_limit_and_reports_one_line(tmp_path: Path) -> None:
    """A step past its limit is killed and reported; a failed step skips the steps that need
    it; the others still run; the summary says which failed."""
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(f"""
        import argparse, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks.vllm_gpu_check_steps import Step, run_one, run_steps

        def quick(args): return {{"checks": {{"fine": True}}, "value": 3}}
        def slow(args): time.sleep(60); return {{}}
        def failing(args): raise RuntimeError("broken on purpose")

        STEPS = [Step("quick", 30, quick), Step("slow", 1.5, slow), Step("failing", 30, failing),
                 Step("after", 30, quick, needs=("failing",))]
        parser = argparse.ArgumentParser()
        parser.add_argument("--step"); parser.add_argument("--work")
        args = parser.parse_args()
        sys.exit(run_one(STEPS, args) if args.step else run_steps(__file__, STEPS, args, []))
    """))
    done = _run(str(script), "--work", str(tmp_path / "work"))
    assert done.returncode == 1, done.stdout + done.stderr
    records = {r["step"]: r for r in _records(done.stdout)}
    assert list(records) == ["quick", "slow", "failing", "after", "summary"]
    assert records["quick"]["ok"] is True and records["quick"]["value"] == 3
    assert records["slow"]["ok"] is False and "timed out after 1.5 s" in records["slow"]["error"]
    assert records["slow"]["seconds"] < 30
    assert "RuntimeError: broken on purpose" in records["failing"]["error"]
    assert records["after"]["skipped"] == "needs failing"
    assert records["summary"]["failed"] == ["slow", "failing", "after"]
