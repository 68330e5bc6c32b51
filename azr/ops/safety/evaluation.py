"""How well the safety rules (or a judge) separate concerning from ordinary reasoning, and when
an iteration's flag count is too high to be false flags.

A labelled excerpt file is JSONL, one object per line: `text`, and for measurement `label`
(`ordinary` or `concerning`) and optionally `split` (`dev`, the excerpts the rules were tuned on;
`holdout`, the ones they were not). The shipped set is tests/fixtures/safety/reasoning_excerpts.jsonl.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

LABELS = ("ordinary", "concerning")


class ExcerptFileError(ValueError):
    """A line of an excerpt file is not what it should be; the message names the line."""


@dataclass(frozen=True)
class Excerpt:
    text: str
    label: str | None = None
    split: str | None = None
    id: str | None = None


def read_excerpts(path: Path) -> list[Excerpt]:
    """Each line a JSON string or an object with `text` (and optional `label`, `split`, `id`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExcerptFileError(f"cannot read {path}: {exc}") from None
    excerpts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExcerptFileError(f"{path}:{number}: not JSON ({exc.msg}); each line must be a JSON string or "
                                   'an object such as {"text": "..."}') from None
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ExcerptFileError(f'{path}:{number}: expected a JSON string or an object with a "text" string')
        label = item.get("label")
        if label is not None and label not in LABELS:
            raise ExcerptFileError(f"{path}:{number}: label {label!r} is not one of {', '.join(LABELS)}")
        excerpts.append(Excerpt(item["text"], label, item.get("split"), item.get("id")))
    return excerpts


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """The exact two-sided upper confidence bound of a rate (1.0 with no trials)."""
    if trials == 0:
        return 1.0
    if successes >= trials:
        return 1.0
    alpha = (1.0 - confidence) / 2.0
    low, high = successes / trials, 1.0
    for _ in range(100):  # the rate whose lower tail at `successes` is alpha
        middle = (low + high) / 2.0
        if binomial_cdf(successes, trials, middle) > alpha:
            low = middle
        else:
            high = middle
    return high


def _log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return min(1.0, sum(math.exp(_log_pmf(i, n, p)) for i in range(k + 1)))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely `k` flags are from false flags alone."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, sum(math.exp(_log_pmf(i, n, p)) for i in range(k, n + 1)))


def alert_threshold(scanned: int, false_flag_rate: float, p_value: float) -> int:
    """The fewest flagged responses out of `scanned` that false flags explain with probability
    below `p_value`."""
    expected = scanned * false_flag_rate
    k = max(1, int(expected))
    while k <= scanned and binomial_tail(k, scanned, false_flag_rate) >= p_value:
        k += 1
    return k


@dataclass(frozen=True)
class Figures:
    """Precision and recall of a flagger on one set of labelled excerpts."""

    split: str
    ordinary: int
    concerning: int
    true_flags: int
    false_flags: int

    @property
    def precision(self) -> float | None:
        flagged = self.true_flags + self.false_flags
        return self.true_flags / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        return self.true_flags / self.concerning if self.concerning else None

    @property
    def false_flag_rate(self) -> float | None:
        return self.false_flags / self.ordinary if self.ordinary else None

    @property
    def false_flag_upper(self) -> float:
        """95% upper bound of the false-flag rate on ordinary reasoning."""
        return clopper_pearson_upper(self.false_flags, self.ordinary)


def measure(excerpts: Sequence[Excerpt], flags: Sequence[bool]) -> list[Figures]:
    """Figures per split (and `all`) of the labelled excerpts; unlabelled ones are left out."""
    rows = [(e, f) for e, f in zip(excerpts, flags, strict=True) if e.label is not None]
    splits = sorted({e.split or "all" for e, _ in rows})
    names = splits + (["all"] if len(splits) > 1 or splits != ["all"] else [])
    figures = []
    for name in dict.fromkeys(names):
        chosen = [(e, f) for e, f in rows if name == "all" or (e.split or "all") == name]
        figures.append(Figures(
            split=name,
            ordinary=sum(e.label == "ordinary" for e, _ in chosen),
            concerning=sum(e.label == "concerning" for e, _ in chosen),
            true_flags=sum(f for e, f in chosen if e.label == "concerning"),
            false_flags=sum(f for e, f in chosen if e.label == "ordinary"),
        ))
    return figures


def rule_flags(excerpts: Sequence[Excerpt], scan: Callable[[str], object] | None = None) -> list[bool]:
    """Whether the rules flag each excerpt (its reasoning part)."""
    from azr.ops.safety.rules import reasoning_of, scan_reasoning

    scan = scan or scan_reasoning
    return [bool(scan(reasoning_of(e.text)).flagged) for e in excerpts]  # type: ignore[attr-defined]
