"""A seeding run on the tiny policy with scripted responses, as a script (the kill -9 test runs
it in a process of its own) and as helpers for the in-process tests.

The scripted backend stands in for the base model only (a fake allowed in a test of the logic
around generation): it proposes a program whose constant comes from the prompt's text, so
different prompts give different tasks, with a comment and a top-level print that the seeding
parse options must remove; about every third proposal (by that constant) has no code block.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from azr.config.schema import AZRConfig
from azr.config.loading import build_config
from azr.engine.api import Completion, SamplingSettings

SEEDING_OVERRIDES = ["buffer.seeding=model", "buffer.allow_small_buffers=false", "buffer.seed_batch_factor=3",
                     "rollout.batch_size=2", "tasks.induction_inputs=4", "sandbox.timeout_s=5"]


def seeding_config(*extra: str) -> AZRConfig:
    return build_config("tiny", overrides=[*SEEDING_OVERRIDES, *extra])


class ScriptedProposer:
    def __init__(self, tokenizer, delay_s: float = 0.0) -> None:  # noqa: ANN001
        self.tokenizer = tokenizer
        self.delay_s = delay_s
        self.calls = 0

    def _answer(self, prompt: str, index: int) -> str:
        constant = zlib.crc32(f"{prompt}:{index}".encode()) % 100_000
        if "Inputs for the Code Snippet Below" in prompt:  # induction propose
            blocks = "".join(f"```input\n{k}\n```\n" for k in range(1, 5))
            body = f"{blocks}```message\nadds a constant\n```"
        elif constant % 3 == 2:
            body = "I cannot write code today."
        else:
            body = (f"```python\ndef g(x):\n    # add a constant\n    return x + {constant}\nprint('top level')\n```\n"
                    f"```input\n{constant % 97}\n```")
        return f" planning </think>\n<answer>{body}</answer>"

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        time.sleep(self.delay_s)
        self.calls += 1
        results = []
        for index, prompt in enumerate(prompts):
            text = self._answer(prompt, index)
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            prompt_ids = tuple(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            results.append([Completion(text, ids, prompt_ids, "stop")])
        return results


class ScriptedPolicy:
    """The policy interface seeding uses (`generate`, `tokenizer`, plus what opening a run
    calls): generation scripted, the real bundled tokenizer."""

    def __init__(self, tokenizer_dir: Path, delay_s: float = 0.0) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)  # the converted bundled model's
        self.backend = ScriptedProposer(self.tokenizer, delay_s)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        return self.backend.generate(prompts, settings)

    def resume(self, root: Path) -> None:
        return None

    def close(self) -> None:
        return None


def seed_run(root: Path, tokenizer_dir: Path, delay_s: float = 0.0, tracker: bool = False) -> dict:
    """Open (or resume) the run at `root` and run its seeding stage; returns the summary."""
    from azr.pipeline.run_dir import open_run_dir
    from azr.pipeline.seeding import run_seeding
    from azr.pipeline.run import close_resources, open_resources

    config = seeding_config()
    run, config = open_run_dir(root, config, resume=(root / "config.yaml").exists())
    res = open_resources(run, config, policy=ScriptedPolicy(tokenizer_dir, delay_s))
    try:
        if tracker:
            from azr.pipeline.mlflow_run import Tracker

            res.tracker = Tracker(run, config)
            res.tracker.start()
        summary = run_seeding(res)
        if tracker:
            res.tracker.finish("FINISHED")
        return summary
    finally:
        close_resources(res)


if __name__ == "__main__":
    seed_run(Path(sys.argv[1]), Path(sys.argv[2]), delay_s=float(sys.argv[3]))
