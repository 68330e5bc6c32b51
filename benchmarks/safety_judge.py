"""Precision and recall of the safety judge on the labelled excerpts
(tests/fixtures/safety/reasoning_excerpts.jsonl), beside the rules'.

The judge is a model asked yes/no through a prompt wrapper (azr/ops/safety/judge.py). This
script runs it with the transformers backend on a local model (default: the bundled
SmolLM2-135M-Instruct, the only model on a machine without hub access), under the `r1` wrapper
and the `chat` wrapper, with the verdict prefilled (the fix) and, for comparison, as before the
fix (no prefill, 8 tokens: the answer starts inside <think>).

    PYTHONPATH=. .venv/bin/python benchmarks/safety_judge.py [--model bundled:smollm2-135m-instruct] [--per-label N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from azr.config.schema import ModelConfig
from azr.engine.models.loading import load_model
from azr.engine.api import SamplingSettings
from azr.engine.rollout.transformers_backend import TransformersBackend
from azr.ops.safety.evaluation import measure, read_excerpts, rule_flags
from azr.ops.safety.judge import judge_prompt, judge_reasoning, judge_says_yes
from azr.selfplay.prompts.chat_format import make_wrapper

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "safety" / "reasoning_excerpts.jsonl"


def _unfixed(backend: TransformersBackend, wrap, texts: list[str]) -> list[bool]:  # noqa: ANN001
    """The judge as it was: no prefill, 8 tokens."""
    settings = SamplingSettings(max_new_tokens=8, temperature=0.0)
    answers = [c[0].text for c in backend.generate([wrap(judge_prompt(t)) for t in texts], settings)]
    return [judge_says_yes(a.replace("</think>", " ")) for a in answers]


def _row(name: str, figures: list) -> str:  # noqa: ANN001
    def rate(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return " | ".join([name] + [f"{f.split}: precision {rate(f.precision)} recall {rate(f.recall)} "
                                f"false flags {f.false_flags}/{f.ordinary}" for f in figures])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--per-label", type=int, default=None,
                        help="the first N ordinary and N concerning excerpts of each split only (a quick estimate)")
    parser.add_argument("--wrappers", default="r1,chat", help="comma-separated: r1, chat")
    args = parser.parse_args()
    excerpts = read_excerpts(FIXTURE)
    if args.per_label is not None:
        counts: dict[tuple, int] = {}
        chosen = []
        for e in excerpts:
            key = (e.split, e.label)
            if counts.get(key, 0) < args.per_label:
                counts[key] = counts.get(key, 0) + 1
                chosen.append(e)
        excerpts = chosen
    texts = [e.text for e in excerpts]
    print(_row("rules", measure(excerpts, rule_flags(excerpts))), flush=True)
    config = ModelConfig(name_or_path=args.model, dtype="float32")
    model, tokenizer = load_model(config, "cpu", for_training=False)
    backend = TransformersBackend(model.eval(), tokenizer, max_batch_size=16)
    for wrapper_name in args.wrappers.split(","):
        wrap = make_wrapper(wrapper_name, tokenizer).wrap
        start = time.perf_counter()
        fixed = judge_reasoning(backend, wrap, texts, max_new_tokens=32)
        seconds = time.perf_counter() - start
        print(_row(f"judge {wrapper_name} (prefilled, 32 tokens; {seconds:.0f} s)", measure(excerpts, fixed)), flush=True)
        before = _unfixed(backend, wrap, texts)
        print(_row(f"judge {wrapper_name} as before (no prefill, 8 tokens)", measure(excerpts, before)), flush=True)


if __name__ == "__main__":
    main()
