"""Monitors for the failure modes AZR users report (docs/algorithm.md §12, the original's issue #1): gains that
saturate, step time that keeps growing, proposal diversity that collapses, a suspected memory
leak, and proposers that copy their references.

Two halves, both pure apart from reading the run's stage files and this process's memory:
`monitor_metrics` adds per-iteration `monitor/...` figures to an iteration's metrics, and
`detect` turns the metrics history into `Finding`s. A detector fires on the iteration where its
condition starts to hold (not again while it keeps holding), so a long run is not flooded.
The Prefect side (flows/) turns each finding into an `azr.monitor.<name>` event.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from azr.config.schema import AZRConfig, MonitorConfig, SafetyConfig
from azr.selfplay.curriculum import ast_size, distinct_ratio
from azr.pipeline.run_dir import RunDir

Metrics = dict[str, float]


@dataclass(frozen=True)
class Finding:
    """A detector that fired: `name` gives the event `azr.monitor.<name>`."""

    name: str
    step: int
    value: float
    threshold: float
    message: str

    @property
    def event(self) -> str:
        return f"azr.monitor.{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "value": self.value, "threshold": self.threshold,
                "message": self.message}


# ------------------------------------------------------------------ per-iteration metrics


def _normalised(program: str) -> str:
    """A program's AST dump, so that whitespace or comment changes still count as a copy."""
    try:
        return ast.dump(ast.parse(program))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return program.strip()


def copy_share(validated: pd.DataFrame, prompts: pd.DataFrame, known: Sequence[str] = ()) -> float | None:
    """Share of valid deduction/abduction proposals whose program repeats one of the programs
    their prompt showed (its references) or a `known` one (a prompt's worked example)."""
    programs = validated[validated["valid"] & validated["input"].notna()]
    if programs.empty:
        return None
    shown = {(g, int(i)): refs for g, i, refs in zip(prompts["group"], prompts["index"], prompts["references"])}
    known_forms = {_normalised(p) for p in known}
    copies = 0
    for group, index, program in zip(programs["group"], programs["index"], programs["program"]):
        references = {_normalised(r["program"]) for r in shown.get((group, int(index)), [])}
        copies += _normalised(program) in references | known_forms
    return copies / len(programs)


def _window_frames(run: RunDir, step: int, window: int) -> pd.DataFrame:
    frames = []
    for past in range(max(1, step - window + 1), step + 1):
        path = run.stage_path(past, "validated.parquet")
        if path.exists():
            frames.append(pd.read_parquet(path, columns=["valid", "program", "input", "output", "inputs", "outputs"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def diversity_metrics(valid: pd.DataFrame) -> Metrics:
    """Distinct programs, inputs and outputs among the valid proposals of the window."""
    if valid.empty:
        return {"monitor/window_programs": 0.0}
    programs = [_normalised(p) for p in valid["program"].dropna()]
    inputs = valid["input"].dropna().tolist() + [i for row in valid["inputs"].dropna() for i in row]
    outputs = valid["output"].dropna().tolist() + [o for row in valid["outputs"].dropna() for o in row]
    metrics = {"monitor/window_programs": float(len(programs)), "monitor/distinct_programs": distinct_ratio(programs)}
    if inputs:
        metrics["monitor/distinct_inputs"] = distinct_ratio(inputs)
    if outputs:
        metrics["monitor/distinct_outputs"] = distinct_ratio(outputs)
    return metrics


def memory_metrics() -> Metrics:
    """Resident memory of this process and of its children (engine ranks, sandbox workers,
    a vLLM server), and the GPU memory torch holds here when CUDA is in use."""
    import psutil

    me = psutil.Process(os.getpid())
    children = 0
    for child in me.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.Error:  # it exited meanwhile
            continue
    metrics = {"monitor/rss_mb": me.memory_info().rss / 2**20, "monitor/rss_children_mb": children / 2**20}
    metrics["monitor/rss_total_mb"] = metrics["monitor/rss_mb"] + metrics["monitor/rss_children_mb"]
    import sys

    torch = sys.modules.get("torch")  # only if the run already loaded it: never import torch for this
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        metrics["monitor/gpu_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        metrics["monitor/gpu_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        metrics["monitor/gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics


def trend(values: Sequence[float]) -> float:
    """Least-squares slope per iteration (0 for fewer than two values)."""
    points = [v for v in values if v is not None and np.isfinite(v)]
    if len(points) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(points), dtype=float), np.asarray(points, dtype=float), 1)[0])


def monitor_metrics(run: RunDir, step: int, metrics: Metrics, history: Sequence[Metrics], config: MonitorConfig,
                    known_programs: Sequence[str] = ()) -> Metrics:
    """The `monitor/...` figures of iteration `step`, given its metrics and those before it."""
    window = config.window
    frame = _window_frames(run, step, window)
    result = diversity_metrics(frame[frame["valid"]] if not frame.empty else frame)
    validated = pd.read_parquet(run.stage_path(step, "validated.parquet"))
    prompts = pd.read_parquet(run.stage_path(step, "propose_prompts.parquet"), columns=["group", "index", "references"])
    share = copy_share(validated, prompts, known_programs)
    if share is not None:
        result["monitor/copy_share"] = share
    sizes = [s for s in (ast_size(p) for p in validated.loc[validated["valid"], "program"].dropna()) if s is not None]
    if sizes:
        result["monitor/program_complexity"] = float(np.mean(sizes))
    result["monitor/response_tokens"] = metrics.get("overall/response_tokens_mean", 0.0)
    recent = [*history[-(window - 1):], {**metrics, **result}] if window > 1 else [{**metrics, **result}]
    for name, key in (("program_complexity", "monitor/program_complexity"), ("response_tokens", "monitor/response_tokens"),
                      ("step_time", "time/iteration_s")):
        result[f"monitor/{name}_trend"] = trend([m[key] for m in recent if key in m])
    result.update(memory_metrics())
    return result


# ------------------------------------------------------------------ detectors


def _mean(history: Sequence[Metrics], key: str) -> float | None:
    values = [m[key] for m in history if key in m and np.isfinite(m[key])]
    return float(np.mean(values)) if values else None


def _diversity(history: Sequence[Metrics], step: int, config: MonitorConfig) -> Finding | None:
    last = history[-1]
    ratio = last.get("monitor/distinct_programs")
    if ratio is None or last.get("monitor/window_programs", 0.0) < config.min_programs or ratio >= config.min_distinct_programs:
        return None
    return Finding("diversity_collapse", step, ratio, config.min_distinct_programs,
                   f"only {ratio:.0%} of the {last['monitor/window_programs']:.0f} valid programs of the last "
                   f"{config.window} iterations are distinct (floor {config.min_distinct_programs:.0%})")


def _copying(history: Sequence[Metrics], step: int, config: MonitorConfig) -> Finding | None:
    share = history[-1].get("monitor/copy_share")
    if share is None or share <= config.max_copy_share:
        return None
    return Finding("reference_copying", step, share, config.max_copy_share,
                   f"{share:.0%} of the valid programs repeat a program their prompt showed (ceiling {config.max_copy_share:.0%})")


def _growth(name: str, key: str, limit_of: Callable[[MonitorConfig], float], what: str) -> Callable:
    def detector(history: Sequence[Metrics], step: int, config: MonitorConfig) -> Finding | None:
        window, limit = config.window, limit_of(config)
        if len(history) < 2 * window:
            return None
        base, now = _mean(history[:window], key), _mean(history[-window:], key)
        if not base or now is None or now / base <= limit:
            return None
        return Finding(name, step, now / base, limit,
                       f"{what} over the last {window} iterations is {now / base:.1f}x that of the first {window} "
                       f"({base:.1f} -> {now:.1f}; limit {limit:.1f}x)")

    return detector


def _memory(history: Sequence[Metrics], step: int, config: MonitorConfig) -> Finding | None:
    series = [m.get("monitor/rss_total_mb") for m in history[-config.window:]]
    if len(series) < config.window or any(v is None for v in series):
        return None
    growth = series[-1] - series[0]
    rising = all(b >= a for a, b in zip(series, series[1:]))
    if not rising or growth <= config.max_rss_growth_mb:
        return None
    return Finding("memory_growth", step, growth, config.max_rss_growth_mb,
                   f"RSS rose in every one of the last {config.window} iterations, by {growth:.0f} MiB in all "
                   f"({series[0]:.0f} -> {series[-1]:.0f} MiB): a leak is likely")


def _saturation(history: Sequence[Metrics], step: int, config: MonitorConfig) -> Finding | None:
    window = config.saturation_window
    if len(history) < 2 * window:
        return None
    before = _mean(history[-2 * window:-window], "overall/solve_accuracy")
    now = _mean(history[-window:], "overall/solve_accuracy")
    if before is None or now is None or now - before >= config.min_accuracy_gain:
        return None
    return Finding("saturation", step, now - before, config.min_accuracy_gain,
                   f"solver accuracy gained {now - before:+.3f} over the last {window} iterations "
                   f"({before:.3f} -> {now:.3f}; at least {config.min_accuracy_gain:.3f} expected)")


def _safety(history: Sequence[Metrics], step: int, config: SafetyConfig) -> Finding | None:
    rate = history[-1].get("safety/rate")
    if rate is None or rate <= config.alert_rate:
        return None
    flagged = history[-1].get("safety/flagged", 0.0)
    return Finding("safety", step, rate, config.alert_rate,
                   f"{flagged:.0f} responses ({rate:.1%}) had concerning reasoning (alert above {config.alert_rate:.1%}); "
                   "see safety.parquet")


MONITOR_DETECTORS: dict[str, Callable[[Sequence[Metrics], int, MonitorConfig], Finding | None]] = {
    "diversity_collapse": _diversity,
    "reference_copying": _copying,
    "step_time_growth": _growth("step_time_growth", "time/iteration_s", lambda c: c.max_step_time_growth, "iteration time"),
    "response_length_growth": _growth("response_length_growth", "monitor/response_tokens",
                                      lambda c: c.max_response_growth, "mean response length"),
    "memory_growth": _memory,
    "saturation": _saturation,
}
DETECTOR_NAMES = (*MONITOR_DETECTORS, "safety")


def _check(history: Sequence[Metrics], step: int, config: AZRConfig) -> dict[str, Finding]:
    found: dict[str, Finding] = {}
    if config.monitor.enabled:
        for name, detector in MONITOR_DETECTORS.items():
            finding = detector(history, step, config.monitor)
            if finding is not None:
                found[name] = finding
    if config.safety.enabled:
        finding = _safety(history, step, config.safety)
        if finding is not None:
            found["safety"] = finding
    return found


def detect(history: Sequence[Metrics], config: AZRConfig) -> list[Finding]:
    """Findings of the last iteration of `history` (oldest first): the detectors whose condition
    holds now and did not hold one iteration earlier."""
    if not history:
        return []
    step = len(history)
    now = _check(history, step, config)
    before = _check(history[:-1], step - 1, config) if len(history) > 1 else {}
    return [finding for name, finding in now.items() if name not in before]


def metrics_history(run: RunDir, upto: int) -> list[Metrics]:
    """The metrics of iterations 1..upto, as written to their metrics.json (empty if missing)."""
    return [run.read_json(step, "metrics.json").get("metrics", {}) for step in range(1, upto + 1)]


# ------------------------------------------------------------------ did the run learn?


LEARNING_RATES = (("format rate", "overall/format_rate"), ("valid proposals", "overall/valid_rate"),
                  ("solver accuracy", "overall/solve_accuracy"))


def learning_verdict(history: Sequence[Metrics], min_change: float = 0.05) -> str:
    """One line: whether format rate, valid-proposal rate and solver accuracy rose over the run
    (least-squares trend over the iterations, as a change from the first to the last)."""
    if len(history) < 2:
        return "learning: one iteration is not enough to see a trend (run more iterations)"
    parts, rising, falling = [], 0, 0
    for label, key in LEARNING_RATES:
        values = [m.get(key) for m in history]
        values = [v for v in values if v is not None]
        if len(values) < 2:
            continue
        change = trend(values) * (len(values) - 1)
        rising += change >= min_change
        falling += change <= -min_change
        parts.append(f"{label} {values[0]:.0%} -> {values[-1]:.0%} (trend {change:+.0%})")
    if rising and not falling:
        head = "learning: yes, the rates rose"
    elif rising:
        head = "learning: mixed, some rates rose and some fell"
    else:
        head = "learning: no rise yet"
    return f"{head} over {len(history)} iterations: " + ", ".join(parts)


def known_programs(config: AZRConfig) -> tuple[str, ...]:
    """Programs every propose prompt shows besides its references (the small profile's example)."""
    if config.tasks.prompt_profile == "small":
        from azr.selfplay.prompts.small import EXAMPLE_PROGRAM

        return (EXAMPLE_PROGRAM,)
    return ()

