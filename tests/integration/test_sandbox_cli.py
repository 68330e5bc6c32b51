"""`azr sandbox run` and `azr sandbox batch`: the exact JSON forms other tools rely on."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flows.entry import app

runner = CliRunner()


def test_run_prints_one_json_object(tmp_path: Path) -> None:
    code = tmp_path / "p.py"
    code.write_text("def f(a, b=1):\n    return {'total': a + b}\n")
    result = runner.invoke(app, ["sandbox", "run", "--code", str(code), "--input", "2, b=3"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["output"] == "{'total': 5}" and payload["error"] == ""
    assert payload["duration_ms"] > 0


def test_run_reports_failures_and_nondeterminism(tmp_path: Path) -> None:
    code = tmp_path / "p.py"
    code.write_text("def f(a):\n    return id(object())\n")
    payload = json.loads(runner.invoke(app, ["sandbox", "run", "--code", str(code), "--input", "1", "--check-determinism"]).stdout)
    assert payload["status"] == "nondeterministic"
    code.write_text("def f(a):\n    while True:\n        pass\n")
    payload = json.loads(runner.invoke(app, ["sandbox", "run", "--code", str(code), "--input", "1", "--timeout", "0.5"]).stdout)
    assert payload["status"] == "timeout"
    code.write_text("def f(a):\n    return 1 / a\n")
    payload = json.loads(runner.invoke(app, ["sandbox", "run", "--code", str(code), "--input", "0"]).stdout)
    assert payload["status"] == "error" and payload["error"].startswith("ZeroDivisionError")


def test_run_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sandbox", "run", "--code", str(tmp_path / "missing.py"), "--input", "1"])
    assert result.exit_code == 2 and "cannot read --code" in result.stderr


def test_batch_keeps_order_and_reports_malformed_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "code": "def f(x):\n    return x * 2", "input": "21"}),
        "{not json",
        json.dumps({"id": "c", "code": "def f(x):\n    return x"}),
        json.dumps(["not", "an", "object"]),
        "",
        json.dumps({"id": 5, "code": "def f(x):\n    return str({str(i) for i in range(9)})", "input": "0"}),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["sandbox", "batch", str(source), "-o", str(out), "--check-determinism", "--workers", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", None, "c", None, 5]
    assert rows[0]["status"] == "ok" and rows[0]["output"] == "42"
    assert all(r["status"] == "error" and "line" in r["error"] for r in rows[1:4])
    assert rows[4]["status"] == "nondeterministic"
    assert all({"id", "status", "output", "error", "duration_ms"} <= set(r) for r in rows)
