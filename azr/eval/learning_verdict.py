"""The end-of-run verdict: did the probe score change, by a test that can say no.

Before and after are the same probe items answered greedily, so each item pairs with itself:
the exact McNemar test counts the items that went wrong -> right and right -> wrong and asks
whether that split could be a fair coin. The verdict is one of

- "learned" / "got worse": p < alpha (0.05), in that direction;
- "no measurable change": p >= alpha after enough iterations;
- "too few iterations to tell": no probe after training yet, or p >= alpha after fewer than
  `min_iterations` iterations (a handful of small updates rarely moves greedy answers, so a null
  result there says nothing);
- "too few probe items to tell": under 6 paired items even a clean sweep has p >= 0.05.

Rising training rates (format, valid proposals) never make it "learned": they are reported
beside it as context, untested.
"""

from __future__ import annotations

from dataclasses import dataclass

from azr.eval.probe import ProbeResult
from azr.eval.scoring.stats import Accuracy, accuracy_of, mcnemar_exact

ALPHA = 0.05
MIN_ITEMS = 6  # 2 * 0.5**6 = 0.031: the fewest paired items that can ever reach p < 0.05
MIN_ITERATIONS = 5

LEARNED, WORSE, NO_CHANGE = "learned", "got worse", "no measurable change"
FEW_ITERATIONS, FEW_ITEMS, NO_PROBE = "too few iterations to tell", "too few probe items to tell", "cannot tell"


@dataclass(frozen=True)
class LearningVerdict:
    label: str
    reason: str
    p_value: float | None = None
    improved: int = 0  # paired items wrong -> right
    worsened: int = 0  # right -> wrong
    before: Accuracy | None = None
    after: Accuracy | None = None
    first_step: int | None = None
    last_step: int | None = None

    @property
    def significant(self) -> bool:
        return self.label in (LEARNED, WORSE)

    def line(self) -> str:
        """'learning: learned (probe 10/48 -> 19/48 from iteration 0 to 20: 11 wrong->right, 2 right->wrong,
        exact McNemar p = 0.022)'."""
        if self.before is None or self.after is None:
            return f"learning: {self.label} ({self.reason})"
        return (f"learning: {self.label} (probe {self.before.correct}/{self.before.total} -> "
                f"{self.after.correct}/{self.after.total} from iteration {self.first_step} to {self.last_step}: "
                f"{self.improved} wrong->right, {self.worsened} right->wrong, exact McNemar p = {self.p_value:.3g}"
                f"{'' if self.significant else '; ' + self.reason})")


def learning_verdict(before: ProbeResult | None, after: ProbeResult | None, *, alpha: float = ALPHA,
                     min_iterations: int = MIN_ITERATIONS) -> LearningVerdict:
    """The verdict from the probe before training and the last probe after it."""
    if before is None:
        return LearningVerdict(NO_PROBE, "no probe result from before training: set trainer.probe_every and "
                                         "trainer.probe_file (the cpu preset does)")
    if after is None or after.step <= before.step:
        return LearningVerdict(FEW_ITERATIONS, "no probe after training yet")
    common = [item for item in before.correct if item in after.correct]
    first = accuracy_of([before.correct[i] for i in common])
    last = accuracy_of([after.correct[i] for i in common])
    improved = sum(not before.correct[i] and after.correct[i] for i in common)
    worsened = sum(before.correct[i] and not after.correct[i] for i in common)
    p_value = mcnemar_exact(improved, worsened)
    fields = dict(p_value=p_value, improved=improved, worsened=worsened, before=first, after=last,
                  first_step=before.step, last_step=after.step)
    if len(common) < MIN_ITEMS:
        return LearningVerdict(FEW_ITEMS, f"{len(common)} paired items; at least {MIN_ITEMS} can show a change",
                               **fields)
    if p_value < alpha:
        return LearningVerdict(LEARNED if improved > worsened else WORSE, f"p < {alpha:g}", **fields)
    if after.step - before.step < min_iterations:
        return LearningVerdict(FEW_ITERATIONS, f"p >= {alpha:g} after {after.step - before.step} iterations "
                                               f"(fewer than {min_iterations})", **fields)
    return LearningVerdict(NO_CHANGE, f"p >= {alpha:g}: a change this size is within chance", **fields)
