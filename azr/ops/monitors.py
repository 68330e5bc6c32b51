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
from azr.pipeline.registry import StageFile
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


class _CanonicalNames(ast.NodeTransformer):
    """Renames every name the program binds (functions, classes, parameters, assigned and loop
    variables) to v0, v1, ... in order of first binding; builtins, attributes and imported
    modules keep their names, so `len(xs)` and `sum(xs)` stay different programs."""

    def __init__(self, bound: list[str]) -> None:
        self.names = {name: f"v{i}" for i, name in enumerate(dict.fromkeys(bound))}

    def _rename(self, name: str) -> str:
        return self.names.get(name, name)

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self._rename(node.arg)
        node.annotation = None
        return node

    def _visit_definition(self, node: ast.AST) -> ast.AST:
        node.name = self._rename(node.name)  # type: ignore[attr-defined]
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_definition


def _bound_names(tree: ast.AST) -> list[str]:
    """Names the program binds, in a fixed traversal order (parse only; nothing is run)."""
    bound: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.append(node.name)
        elif isinstance(node, ast.arg):
            bound.append(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.append(node.id)
    return bound


def _normalised(program: str) -> str:
    """A program's AST dump with canonical names, so that whitespace, comments, docstrings and
    renamed variables still count as a copy. Parsed with `ast`, never run."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return program.strip()
    for node in ast.walk(tree):  # docstrings are comments too
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    try:
        return ast.dump(_CanonicalNames(_bound_names(tree)).visit(tree))
    except RecursionError:
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
        path = run.stage_path(past, StageFile.VALIDATED)
        if path.exists():
            frames.append(pd.read_parquet(path, columns=["group", "valid", "program", "input", "output", "inputs", "outputs"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _proposal_of(row: Any, induction: bool) -> str:
    """What a proposer wrote: its program (deduction, abduction) or its set of inputs
    (induction, whose program was drawn from the buffer and is not the proposer's)."""
    if induction:
        return "\x00".join(str(i) for i in (row.inputs if row.inputs is not None else ()))
    return _normalised(row.program)


def diversity_metrics(valid: pd.DataFrame) -> Metrics:
    """Distinct proposals among the valid proposals of the window, per task type
    (`monitor/<type>/distinct_proposals`), and distinct inputs and outputs overall."""
    if valid.empty:
        return {"monitor/window_programs": 0.0}
    metrics: Metrics = {}
    groups = valid["group"] if "group" in valid else pd.Series(["deduction_propose"] * len(valid), index=valid.index)
    for group in sorted(set(groups.dropna())):
        task_type = str(group).removesuffix("_propose")
        rows = valid[groups == group]
        proposals = [_proposal_of(row, task_type == "induction") for row in rows.itertuples()]
        metrics[f"monitor/{task_type}/window_proposals"] = float(len(proposals))
        metrics[f"monitor/{task_type}/distinct_proposals"] = distinct_ratio(proposals)
    programs = [_normalised(p) for p, g in zip(valid["program"], groups) if p is not None and g != "induction_propose"]
    metrics["monitor/window_programs"] = float(len(programs))
    if programs:
        metrics["monitor/distinct_programs"] = distinct_ratio(programs)
    inputs = valid["input"].dropna().tolist() + [i for row in valid["inputs"].dropna() for i in row]
    outputs = valid["output"].dropna().tolist() + [o for row in valid["outputs"].dropna() for o in row]
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
    # the room left for resident memory to grow into; read live, like the rss figures
    metrics["monitor/rss_headroom_mb"] = psutil.virtual_memory().available / 2**20
    import sys

    torch = sys.modules.get("torch")  # only if the run already loaded it: never import torch for this
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        metrics["monitor/gpu_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        metrics["monitor/gpu_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
        metrics["monitor/gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics


def robust_slope(values: Sequence[float]) -> float:
    """Theil-Sen slope per iteration: the median of the slopes between every two points, so a
    one-off jump (a warm-up, a cache filling) does not read as steady growth. 0 for < 2 points."""
    points = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(points) < 2:
        return 0.0
    i, j = np.triu_indices(len(points), k=1)
    return float(np.median((points[j] - points[i]) / (j - i)))


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
    validated = pd.read_parquet(run.stage_path(step, StageFile.VALIDATED))
    prompts = pd.read_parquet(run.stage_path(step, StageFile.PROPOSE_PROMPTS), columns=["group", "index", "references"])
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


def _diversity(history: Sequence[Metrics], step: int, config: AZRConfig) -> Finding | None:
    """Fires when the valid proposals of one task type over the window repeat themselves:
    programs for deduction/abduction, input sets for induction (its programs come from the buffer)."""
    monitor, last = config.monitor, history[-1]
    worst: tuple[float, str, float] | None = None
    for key, ratio in last.items():
        if not (key.startswith("monitor/") and key.endswith("/distinct_proposals")):
            continue
        task_type = key.split("/")[1]
        count = last.get(f"monitor/{task_type}/window_proposals", 0.0)
        if count >= monitor.min_programs and ratio < monitor.min_distinct_programs and (worst is None or ratio < worst[0]):
            worst = (ratio, task_type, count)
    if worst is None:
        return None
    ratio, task_type, count = worst
    return Finding("diversity_collapse", step, ratio, monitor.min_distinct_programs,
                   f"only {ratio:.0%} of the {count:.0f} valid {task_type} proposals of the last {monitor.window} "
                   f"iterations are distinct (floor {monitor.min_distinct_programs:.0%})")


def _copying(history: Sequence[Metrics], step: int, config: AZRConfig) -> Finding | None:
    limit = config.monitor.max_copy_share
    share = history[-1].get("monitor/copy_share")
    if share is None or share <= limit:
        return None
    return Finding("reference_copying", step, share, limit,
                   f"{share:.0%} of the valid programs repeat a program their prompt showed, up to variable names "
                   f"(ceiling {limit:.0%})")


def _growth(name: str, key: str, limit_of: Callable[[MonitorConfig], float], what: str) -> Callable:
    """Growth judged against the run's own history: the trend of the iterations before the last
    window, extrapolated, predicts the last window; fires when the last window's mean exceeds
    that prediction by the limit. Steady growth (the original's steps and responses lengthen
    by design) is reported as the `*_trend` metrics, not as a finding."""

    def detector(history: Sequence[Metrics], step: int, config: AZRConfig) -> Finding | None:
        window, limit = config.monitor.window, limit_of(config.monitor)
        series = [m.get(key) for m in history]
        series = [v for v in series if v is not None and np.isfinite(v)]
        if len(series) < 3 * window:
            return None  # too little history to say what is normal for this run
        past, recent = series[:-window], series[-window:]
        slope = max(robust_slope(past), 0.0)
        level = float(np.median(past[-window:]))
        expected = level + slope * (window + (window - 1) / 2)
        now = float(np.mean(recent))
        if expected <= 0 or now / expected <= limit:
            return None
        return Finding(name, step, now / expected, limit,
                       f"{what} over the last {window} iterations ({now:.1f}) is {now / expected:.1f}x what the run's "
                       f"own trend predicts ({expected:.1f}; limit {limit:.1f}x)")

    return detector


def _memory(history: Sequence[Metrics], step: int, config: AZRConfig) -> Finding | None:
    """A leak: the robust trend of RSS over `memory_window` iterations, continued to the last
    iteration of the run, would use up the memory still available (less the reserve)."""
    monitor = config.monitor
    series = [m.get("monitor/rss_total_mb") for m in history[-monitor.memory_window:]]
    series = [v for v in series if v is not None]
    available = history[-1].get("monitor/rss_headroom_mb")
    if len(series) < monitor.memory_window or available is None:
        return None
    slope = robust_slope(series)
    left = max(config.trainer.iterations - step, 0)
    projected = slope * left
    room = available - monitor.max_rss_growth_mb
    if slope <= 0 or projected <= room:
        return None
    exhausted_in = max(room, 0.0) / slope
    return Finding("memory_growth", step, projected, room,
                   f"RSS grows by {slope:.0f} MiB per iteration over the last {len(series)} iterations; at that rate "
                   f"the {left} iterations left need {projected:.0f} MiB more, and {available:.0f} MiB are available "
                   f"(reserve {monitor.max_rss_growth_mb:.0f} MiB): memory runs out in about {exhausted_in:.0f} iterations")


def validation_scores(metrics: Metrics) -> list[float]:
    """The in-training validation and probe accuracies an iteration logged (`eval/<key>/accuracy`,
    `probe/<key>/accuracy`): what saturates in the paper, unlike self-play solve accuracy, which
    the learnability reward keeps flat by design."""
    return [v for k, v in metrics.items()
            if (k.startswith("eval/") or k.startswith("probe/")) and k.endswith("/accuracy") and np.isfinite(v)]


def _saturation(history: Sequence[Metrics], step: int, config: AZRConfig) -> Finding | None:
    """Fires when the mean validation score of the last `saturation_window` iterations beats
    that of the window before by less than `min_accuracy_gain`; silent (cannot tell) until each
    window holds at least `min_validation_points` evaluations."""
    monitor = config.monitor
    window = monitor.saturation_window
    if len(history) < 2 * window:
        return None
    before = [np.mean(s) for s in map(validation_scores, history[-2 * window:-window]) if s]
    now = [np.mean(s) for s in map(validation_scores, history[-window:]) if s]
    if min(len(before), len(now)) < monitor.min_validation_points:
        return None
    gain = float(np.mean(now) - np.mean(before))
    if gain >= monitor.min_accuracy_gain:
        return None
    return Finding("saturation", step, gain, monitor.min_accuracy_gain,
                   f"validation accuracy gained {gain:+.3f} over the last {window} iterations "
                   f"({np.mean(before):.3f} -> {np.mean(now):.3f} over {len(before)} and {len(now)} evaluations; "
                   f"at least {monitor.min_accuracy_gain:.3f} expected)")


def _safety(history: Sequence[Metrics], step: int, config: SafetyConfig) -> Finding | None:
    """Fires when an iteration has more flagged responses than false flags explain: a one-sided
    binomial test at the rules' measured false-flag rate (`safety.false_flag_rate`), so that with
    ~2,000 responses an iteration an alert is not the expected handful of false flags."""
    from azr.ops.safety.evaluation import alert_threshold, binomial_tail

    last = history[-1]
    rate, scanned, flagged = last.get("safety/rate"), last.get("safety/scanned"), last.get("safety/flagged", 0.0)
    if rate is None or rate <= config.alert_rate or not flagged:
        return None
    if scanned:
        chance = binomial_tail(int(flagged), int(scanned), config.false_flag_rate)
        if chance >= config.alert_p_value:
            return None
        needed = alert_threshold(int(scanned), config.false_flag_rate, config.alert_p_value)
        detail = (f"false flags at the measured rate ({config.false_flag_rate:.1%}) would reach {needed} of "
                  f"{scanned:.0f} with probability below {config.alert_p_value:g}")
    else:
        detail = "no scanned count was logged"
    return Finding("safety", step, rate, config.alert_rate,
                   f"{flagged:.0f} responses ({rate:.1%}) had concerning reasoning; {detail}; see safety.parquet")


def _logprob_mismatch(history: Sequence[Metrics], step: int, config: AZRConfig) -> Finding | None:
    """The rollout engine and the trainer disagree on the sampled tokens' log-probs by more than
    the setting (engine numerics, or a policy that moved far in one step; docs/algorithm.md §14)."""
    limit = config.monitor.max_logprob_mismatch
    mismatch = history[-1].get("off_policy/mismatch_mean")
    if mismatch is None or mismatch <= limit:
        return None
    lag = history[-1].get("off_policy/policy_lag")
    return Finding("logprob_mismatch", step, mismatch, limit,
                   f"mean |logp_rollout - logp_trainer| over the sampled tokens is {mismatch:.3f} (ceiling {limit:.3f}; "
                   f"largest {history[-1].get('off_policy/mismatch_max', float('nan')):.3f}, policy lag "
                   f"{'unknown' if lag is None else f'{lag:.0f}'} versions): check the rollout engine's dtype and "
                   "weight syncs, or lower the learning rate")


MONITOR_DETECTORS: dict[str, Callable[[Sequence[Metrics], int, AZRConfig], Finding | None]] = {
    "diversity_collapse": _diversity,
    "reference_copying": _copying,
    "step_time_growth": _growth("step_time_growth", "time/iteration_s", lambda c: c.max_step_time_growth, "iteration time"),
    "response_length_growth": _growth("response_length_growth", "monitor/response_tokens",
                                      lambda c: c.max_response_growth, "mean response length"),
    "memory_growth": _memory,
    "saturation": _saturation,
    "logprob_mismatch": _logprob_mismatch,
}
DETECTOR_NAMES = (*MONITOR_DETECTORS, "safety")


def _check(history: Sequence[Metrics], step: int, config: AZRConfig) -> dict[str, Finding]:
    found: dict[str, Finding] = {}
    if config.monitor.enabled:
        for name, detector in MONITOR_DETECTORS.items():
            finding = detector(history, step, config)
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
    """The metrics of iterations 1..upto, as written to their metrics.json (empty if missing),
    with the in-training evaluation of the iteration (eval.json) where there was one."""
    return [{**run.read_json(step, "metrics.json").get("metrics", {}), **run.read_json(step, "eval.json").get("metrics", {})}
            for step in range(1, upto + 1)]


# ------------------------------------------------------------------ did the run learn?


LEARNING_RATES = (("format rate", "overall/format_rate"), ("valid proposals", "overall/valid_rate"),
                  ("solver accuracy", "overall/solve_accuracy"))


def learning_verdict(history: Sequence[Metrics], min_change: float = 0.05) -> str:
    """One line: whether format rate, valid-proposal rate and solver accuracy rose over the run
    (least-squares trend over the iterations, as a change from the first to the last). These rates
    follow the model's own proposals and are not tested, so the line never says it learned: the
    probe's paired test does (azr/eval/learning_verdict.py)."""
    if len(history) < 2:
        return "training rates: one iteration is not enough to see a trend (run more iterations)"
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
        head = "training rates rose (untested; self-made tasks)"
    elif rising:
        head = "training rates mixed, some rose and some fell (untested)"
    else:
        head = "training rates: no rise"
    return f"{head} over {len(history)} iterations: " + ", ".join(parts)


def known_programs(config: AZRConfig) -> tuple[str, ...]:
    """Programs every propose prompt shows besides its references (the small profile's example)."""
    if config.tasks.prompt_profile == "small":
        from azr.selfplay.prompts.small import EXAMPLE_PROGRAM

        return (EXAMPLE_PROGRAM,)
    return ()

