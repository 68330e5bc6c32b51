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

import pandas as pd
import pytest
import yaml

from azr.config.schema import AZRConfig
from azr.ops.monitors import DETECTOR_NAMES, copy_share, detect, diversity_metrics, learning_verdict, trend
from tests.support.prefect_local import ROOT, LocalPrefect


def _config(**monitor) -> AZRConfig:
    config = AZRConfig()
    config.monitor = config.monitor.model_copy(update={"window": 3, "saturation_window": 3, **monitor})
    return config


def _steady(n: int, **extra) -> list[dict[str, float]]:
    return [{"time/iteration_s": 100.0, "monitor/response_tokens": 200.0, "monitor/rss_total_mb": 3000.0,
             "overall/solve_accuracy": 0.1 * i, **extra} for i in range(n)]


def test_quiet_history_fires_nothing() -> None:
    assert detect(_steady(8), _config()) == []


def test_step_time_growth_fires_once_when_it_starts() -> None:
    history = _steady(6) + [{**_steady(1)[0], "time/iteration_s": 400.0, "overall/solve_accuracy": 0.7 + 0.1 * i} for i in range(3)]
    fired = [[f.name for f in detect(history[:n], _config())] for n in range(1, len(history) + 1)]
    assert fired[:7] == [[]] * 7  # the window mean is 200 s: 2x, not above the 2.0 limit
    assert fired[7] == ["step_time_growth"]  # (100 + 400 + 400) / 3 = 300 s > 2 x 100 s
    assert fired[8] == []  # still holding: not fired again
    finding = detect(history[:8], _config())[0]
    assert finding.event == "azr.monitor.step_time_growth"
    assert finding.value == pytest.approx(3.0) and finding.threshold == 2.0


def test_each_detector_fires_on_its_failure_mode() -> None:
    config = _config(min_programs=4, max_rss_growth_mb=500.0)
    cases = {
        "diversity_collapse": _steady(5) + [{**_steady(1)[0], "monitor/distinct_programs": 0.1, "monitor/window_programs": 20.0}],
        "reference_copying": _steady(5) + [{**_steady(1)[0], "monitor/copy_share": 0.9}],
        "response_length_growth": _steady(3) + [{**_steady(1)[0], "monitor/response_tokens": 900.0} for _ in range(3)],
        "memory_growth": _steady(3) + [{**_steady(1)[0], "monitor/rss_total_mb": 3000.0 + 400 * i} for i in range(3)],
        "saturation": [{**_steady(1)[0], "overall/solve_accuracy": 0.3} for _ in range(6)],
        "safety": _steady(5) + [{**_steady(1)[0], "safety/rate": 0.2, "safety/flagged": 6.0}],
    }
    assert set(cases) | {"step_time_growth"} == set(DETECTOR_NAMES)
    for name, history in cases.items():
        # the rising accuracy of _steady keeps saturation quiet in the other cases
        fired = {f.name for f in detect(history, config)}
        assert name in fired, (name, fired)


def test_safety_detector_uses_its_setting() -> None:
    history = _steady(2) + [{**_steady(1)[0], "safety/rate": 0.05, "safety/flagged": 2.0}]
    config = _config()
    assert [f.name for f in detect(history, config)] == ["safety"]
    config.safety = config.safety.model_copy(update={"alert_rate": 0.1})
    assert detect(history, config) == []


def test_diversity_and_copy_share() -> None:
    valid = pd.DataFrame({"program": ["def f(a):\n    return a", "def f(a):  # same\n    return a", "def f(b):\n    return b + 1"],
                          "input": ["1", "2", "3"], "output": ["1", "2", "4"], "inputs": [None] * 3, "outputs": [None] * 3})
    metrics = diversity_metrics(valid)
    assert metrics["monitor/distinct_programs"] == pytest.approx(2 / 3)
    assert metrics["monitor/distinct_inputs"] == 1.0
    validated = valid.assign(valid=True, group="deduction_propose", index=[0, 1, 2])
    prompts = pd.DataFrame({"group": ["deduction_propose"] * 3, "index": [0, 1, 2],
                            "references": [[{"program": "def f(a):\n    return a", "input": "1", "output": "1"}]] * 3})
    assert copy_share(validated, prompts) == pytest.approx(2 / 3)
    assert copy_share(validated, prompts, known=["def f(b): return b + 1"]) == 1.0


def test_trend_and_verdict() -> None:
    assert trend([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert trend([5.0]) == 0.0
    rising = [{"overall/format_rate": 0.1 * i, "overall/valid_rate": 0.05 * i, "overall/solve_accuracy": 0.2} for i in range(4)]
    assert learning_verdict(rising).startswith("learning: yes")
    flat = [{"overall/format_rate": 0.2, "overall/valid_rate": 0.0, "overall/solve_accuracy": 0.1}] * 3
    assert learning_verdict(flat).startswith("learning: no rise yet")
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
        history = [{"time/iteration_s": 100.0}] * 2 + [{"time/iteration_s": 500.0}] * 2
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
        assert event["payload"]["step"] == 4 and event["payload"]["threshold"] == 2.0
        assert any(r["prefect.resource.id"].startswith("prefect.flow-run.") for r in event["related"])

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
