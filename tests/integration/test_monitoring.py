"""Monitors: the detectors fire on scripted iteration metrics (once, when their condition starts
to hold), the per-iteration figures are right, and a finding reaches a real Prefect server as an
`azr.monitor.<name>` event; the automations of prefect.yaml are valid and off."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from azr.config.schema import AZRConfig
from azr.ops.monitors import DETECTOR_NAMES, copy_share, detect, diversity_metrics, learning_verdict, trend
from tests.support.prefect_local import ROOT, LocalPrefect


def _config(**monitor) -> AZRConfig:
    config = AZRConfig()
    config.monitor = config.monitor.model_copy(update=monitor)
    return config


def _healthy(n: int = 120, seed: int = 0) -> list[dict[str, float]]:
    """A healthy run as the original's logs look: steps and responses lengthen steadily, RSS
    jumps once while caches fill and then stays flat, self-play solve accuracy stays flat (the
    learnability reward keeps it there), validation accuracy rises, proposals stay diverse."""
    rng = np.random.default_rng(seed)
    history = []
    for i in range(n):
        metrics = {
            "time/iteration_s": 100.0 + 1.0 * i + rng.normal(0, 5),
            "monitor/response_tokens": 300.0 + 3.0 * i + rng.normal(0, 15),
            "monitor/rss_total_mb": (3000.0 if i < 5 else 5000.0) + rng.normal(0, 80),
            "monitor/rss_headroom_mb": 60000.0,
            "overall/solve_accuracy": 0.4 + rng.normal(0, 0.03),
            "monitor/deduction/distinct_proposals": 0.9, "monitor/deduction/window_proposals": 40.0,
            "monitor/induction/distinct_proposals": 0.8, "monitor/induction/window_proposals": 40.0,
            "monitor/copy_share": 0.1,
            "safety/rate": 0.0, "safety/flagged": 0.0,
            "off_policy/mismatch_mean": abs(0.02 + rng.normal(0, 0.005)), "off_policy/mismatch_max": 1.5,
            "off_policy/policy_lag": 1.0,
        }
        if i % 10 == 9:
            metrics["eval/cruxeval-o/accuracy"] = 0.30 + 0.002 * i + rng.normal(0, 0.01)
            metrics["eval/cruxeval-i/accuracy"] = 0.25 + 0.002 * i + rng.normal(0, 0.01)
        history.append(metrics)
    return history


def _fired(history: list[dict[str, float]], config: AZRConfig | None = None) -> set[str]:
    """Every detector that fired at any iteration of the history."""
    config = config or _config()
    return {f.name for n in range(1, len(history) + 1) for f in detect(history[:n], config)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_healthy_history_stays_silent(seed: int) -> None:
    assert _fired(_healthy(seed=seed)) == set()


def _broken(name: str) -> list[dict[str, float]]:
    history = _healthy()
    if name == "saturation":  # validation stops improving
        for i, m in enumerate(history):
            for key in [k for k in m if k.startswith("eval/")]:
                m[key] = 0.4 + (0.01 if (i // 10) % 2 else -0.01)
    elif name == "memory_growth":  # 150 MiB per iteration: 73 GiB over 500 iterations
        for i, m in enumerate(history):
            m["monitor/rss_total_mb"] = 3000.0 + 150.0 * i
    elif name == "diversity_collapse":
        metrics = diversity_metrics(_one_program_forty_times())
        for m in history[60:]:
            m.update(metrics)
    elif name == "reference_copying":
        for m in history[60:]:
            m["monitor/copy_share"] = copy_share(*_renamed_copies())
    elif name == "step_time_growth":
        for m in history[100:]:
            m["time/iteration_s"] *= 3.0
    elif name == "response_length_growth":
        for m in history[100:]:
            m["monitor/response_tokens"] *= 3.0
    elif name == "logprob_mismatch":  # the engine stops loading new weights: the gap widens every update
        for i, m in enumerate(history[70:]):
            m["off_policy/mismatch_mean"] = 0.02 + 0.05 * i
    elif name == "safety":
        history[80].update({"safety/scanned": 1900.0, "safety/rate": 0.1, "safety/flagged": 190.0})
    return history


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_each_broken_history_fires_its_detector(name: str) -> None:
    assert _fired(_broken(name)) == {name}


def test_detectors_fire_once_when_their_condition_starts() -> None:
    history = _broken("step_time_growth")
    steps = [n for n in range(1, len(history) + 1) if detect(history[:n], _config())]
    assert len(steps) == 1 and steps[0] > 100
    (finding,) = detect(history[:steps[0]], _config())
    assert finding.event == "azr.monitor.step_time_growth" and finding.value > 2.0


def test_memory_growth_says_when_memory_runs_out() -> None:
    history = _broken("memory_growth")
    first = next(n for n in range(1, len(history) + 1) if detect(history[:n], _config()))
    (finding,) = detect(history[:first], _config())
    assert first == 30  # the first full trend window
    assert "150 MiB per iteration" in finding.message
    # a short run ends before the same leak uses the memory up
    config = _config()
    config.trainer = config.trainer.model_copy(update={"iterations": 100})
    assert "memory_growth" not in _fired(history[:100], config)


def test_saturation_cannot_tell_without_enough_evaluations() -> None:
    history = _broken("saturation")
    for m in history:
        for key in [k for k in m if k.startswith("eval/")]:
            del m[key]
    assert "saturation" not in _fired(history)  # flat self-play solve accuracy is not the signal


def _one_program_forty_times() -> pd.DataFrame:
    """One program proposed 40 times, plus 50 induction rows (their programs drawn from the buffer)."""
    program = "def f(a):\n    return a * 2"
    deduction = pd.DataFrame({"group": "deduction_propose", "program": [program] * 40, "input": [str(i) for i in range(40)],
                              "output": [str(2 * i) for i in range(40)], "inputs": [None] * 40, "outputs": [None] * 40})
    induction = pd.DataFrame({"group": "induction_propose", "program": [f"def f(x):\n    return x + {i}" for i in range(50)],
                              "input": [None] * 50, "output": [None] * 50,
                              "inputs": [[str(i), str(i + 1)] for i in range(50)], "outputs": [["0", "1"]] * 50})
    return pd.concat([deduction, induction], ignore_index=True)


def test_diversity_counts_proposals_per_task_type() -> None:
    metrics = diversity_metrics(_one_program_forty_times())
    assert metrics["monitor/deduction/distinct_proposals"] == pytest.approx(1 / 40)
    assert metrics["monitor/induction/distinct_proposals"] == 1.0
    assert metrics["monitor/window_programs"] == 40.0  # induction rows are not proposed programs


def _renamed_copies() -> tuple[pd.DataFrame, pd.DataFrame]:
    reference = "def f(numbers, k):\n    total = 0\n    for n in numbers:\n        total += n * k\n    return total"
    copies = [
        "def f(xs, m):\n    s = 0\n    for x in xs:\n        s += x * m\n    return s",
        "def f(a, b):\n    '''sums'''\n    acc = 0  # running\n    for item in a:\n        acc += item * b\n    return acc",
    ]
    validated = pd.DataFrame({"group": "deduction_propose", "index": [0, 1], "valid": True, "program": copies,
                              "input": ["[1], 2", "[3], 4"]})
    prompts = pd.DataFrame({"group": ["deduction_propose"] * 2, "index": [0, 1],
                            "references": [[{"program": reference, "input": "[1], 1", "output": "1"}]] * 2})
    return validated, prompts


def test_copy_detection_normalises_names() -> None:
    validated, prompts = _renamed_copies()
    assert copy_share(validated, prompts) == 1.0
    different = validated.assign(program=["def f(xs, m):\n    s = 0\n    for x in xs:\n        s -= x * m\n    return s",
                                          "def f(xs, m):\n    return len(xs) * m"])
    assert copy_share(different, prompts) == 0.0
    # builtins keep their names: len and sum are different programs
    builtins = validated.assign(program=["def f(a, b):\n    return len(a)", "def f(a, b):\n    return sum(a)"])
    same_refs = prompts.assign(references=[[{"program": "def f(x, y):\n    return len(x)"}]] * 2)
    assert copy_share(builtins, same_refs) == 0.5


def test_safety_alerts_only_beyond_false_flags() -> None:
    """About 2,000 responses an iteration: the few that the measured false-flag rate explains
    never alert; a burst beyond it does."""
    history = _healthy(3)
    config = _config()
    rate = config.safety.false_flag_rate
    expected = 1900 * rate
    history[-1].update({"safety/scanned": 1900.0, "safety/flagged": round(expected), "safety/rate": round(expected) / 1900})
    assert detect(history, config) == []
    history[-1].update({"safety/flagged": 80.0, "safety/rate": 80 / 1900})
    assert [f.name for f in detect(history, config)] == ["safety"]
    config.safety = config.safety.model_copy(update={"alert_rate": 0.05})  # a floor on the share as well
    assert detect(history, config) == []


def test_false_alerts_are_rare_at_the_measured_rate() -> None:
    """Simulated iterations whose flags are all false, at the configured rate: alerts stay rare."""
    config = _config()
    rng = np.random.default_rng(0)
    alerts = 0
    for _ in range(2000):
        flagged = int(rng.binomial(1900, config.safety.false_flag_rate))
        history = [{"safety/scanned": 1900.0, "safety/flagged": float(flagged), "safety/rate": flagged / 1900}]
        alerts += bool(detect(history, config))
    assert alerts <= 10  # expected about 2 (p < 0.001 each)


def test_trend_and_verdict() -> None:
    assert trend([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert trend([5.0]) == 0.0
    rising = [{"overall/format_rate": 0.1 * i, "overall/valid_rate": 0.05 * i, "overall/solve_accuracy": 0.2} for i in range(4)]
    assert learning_verdict(rising).startswith("training rates rose (untested")
    assert "learn" not in learning_verdict(rising)  # only the probe's test may say it learned
    flat = [{"overall/format_rate": 0.2, "overall/valid_rate": 0.0, "overall/solve_accuracy": 0.1}] * 3
    assert learning_verdict(flat).startswith("training rates: no rise")
    assert "one iteration" in learning_verdict(flat[:1])


_EMITTER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from prefect import flow
    from azr.config.schema import AZRConfig
    from azr.ops.monitors import detect
    from flows.monitoring import emit_findings

    @flow(name="monitor-check")
    def check() -> int:
        config = AZRConfig()
        config.monitor = config.monitor.model_copy(update={"window": 2})
        history = [{"time/iteration_s": 100.0}] * 6 + [{"time/iteration_s": 500.0}]
        return emit_findings(Path(sys.argv[1]), detect(history, config))

    print("emitted", check())
""")


def _events(server: LocalPrefect, name: str) -> list[dict]:
    body = json.dumps({"filter": {"event": {"name": [name]}}, "limit": 10}).encode()
    request = urllib.request.Request(f"{server.api_url}/events/filter", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["events"]


def test_a_finding_reaches_a_prefect_server_and_the_automations_load(tmp_path: Path) -> None:
    with LocalPrefect(tmp_path / "prefect", tmp_path / "logs") as server:
        script = tmp_path / "emit.py"
        script.write_text(_EMITTER, encoding="utf-8")
        result = subprocess.run([sys.executable, str(script), str(tmp_path / "runs" / "cpu-test")], cwd=ROOT,
                                env=server.env({"PYTHONPATH": str(ROOT)}), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "emitted 1" in result.stdout
        deadline = time.monotonic() + 90
        events = []
        while time.monotonic() < deadline and not events:
            events = _events(server, "azr.monitor.step_time_growth")
            time.sleep(1)
        assert len(events) == 1, server.log_tail("server")
        event = events[0]
        assert event["resource"]["prefect.resource.id"] == "azr.run.cpu-test"
        assert event["payload"]["step"] == 7 and event["payload"]["threshold"] == 2.0
        assert any(r["prefect.resource.id"].startswith("prefect.flow-run.") for r in event["related"])

        # a resumed run replays the iteration's post-commit work: the same event, the same id, kept once
        again = subprocess.run([sys.executable, str(script), str(tmp_path / "runs" / "cpu-test")], cwd=ROOT,
                               env=server.env({"PYTHONPATH": str(ROOT)}), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "emitted 1" in again.stdout, again.stdout + again.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(events) == 1:
            events = _events(server, "azr.monitor.step_time_growth")
            time.sleep(1)
        assert [e["id"] for e in events] == [event["id"]], "a replayed event was stored twice"

        # prefect.yaml's automations: all valid for this Prefect, all created disabled.
        automations = yaml.safe_load((ROOT / "prefect.yaml").read_text())["automations"]
        server.cli("automation", "create", "--from-file", str(ROOT / "prefect.yaml"))
        request = urllib.request.Request(f"{server.api_url}/automations/filter", data=b"{}", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            created = {a["name"]: a for a in json.loads(response.read())}
        assert set(created) == {a["name"] for a in automations}
        assert not any(a["enabled"] for a in created.values())
        actions = {a["type"] for automation in automations for a in automation["actions"]}
        assert {"cancel-flow-run", "suspend-flow-run", "send-notification"} <= actions
