"""The colocate mode for real, run with the Python that has vLLM (test_vllm_server.py starts it).

The project's own environment cannot hold vLLM next to Prefect, but `azr/` never imports
Prefect, so a policy with a colocated `vllm.LLM` runs in the vLLM environment with the project
on PYTHONPATH. It checks that greedy output equals the transformers backend's before and after
an update, and prints the figures as one JSON line.

    PYTHONPATH=. .venv-vllm/bin/python tests/support/vllm_colocate_check.py MODEL_DIR WORK_DIR
"""

from __future__ import annotations

import json
import sys
import time


def main(model_dir: str, work_dir: str) -> dict[str, object]:
    from azr.config.loading import build_config
    from azr.engine.api import SamplingSettings
    from azr.engine.rollout.transformers_backend import TransformersBackend
    from azr.engine.rank.policy import Policy
    from azr.engine.api import TrainSequence
    from azr.selfplay.prompts.chat_format import ChatWrapper

    config = build_config("cpu", None, [
        f"model.name_or_path={model_dir}", "model.dtype=float32", "model.gradient_checkpointing=false",
        "rollout.backend=vllm", "rollout.vllm.mode=colocate", "rollout.vllm.enforce_eager=true",
        "rollout.vllm.cpu_kv_cache_gib=1", "rollout.max_new_tokens=24", "rollout.max_prompt_tokens=512",
        "rollout.content_max_tokens=400", "trainer.learning_rate=0.0001",
    ])
    started = time.perf_counter()
    policy = Policy.create(config, cpu=True, rollout_dir=work_dir)
    start_s = time.perf_counter() - started
    wrapper = ChatWrapper(policy.tokenizer)
    prompts = [wrapper.wrap("Write a Python function that returns the largest of three numbers."),
               wrapper.wrap("What does sorted([3, 1, 2])[::-1] return?")]
    greedy = SamplingSettings(max_new_tokens=24, temperature=0.0)
    reference = TransformersBackend(policy.unwrapped_model, policy.tokenizer)

    def ids(backend: object) -> list[list[int]]:
        return [list(c[0].token_ids) for c in backend.generate(prompts, greedy)]  # type: ignore[attr-defined]

    before = ids(policy)
    before_matches = before == ids(reference)
    target = policy.tokenizer("Banana banana banana.", add_special_tokens=False)["input_ids"]
    prompt_ids = policy.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    policy.update([TrainSequence(p, target, "deduction_solve", 1.0) for p in prompt_ids])
    expected = ids(reference)
    sync_s = policy.sync_rollout_weights()
    after = ids(policy)
    sampled = policy.generate(prompts, SamplingSettings(max_new_tokens=24, temperature=1.0, n=4, seed=3))
    policy.close()
    return {
        "backend": type(policy.backend).__name__,
        "start_s": round(start_s, 2),
        "sync_s": sync_s,
        "before_matches": before_matches,
        "update_changed_output": expected != before,
        "after_matches": after == expected,
        "samples_per_prompt": [len(group) for group in sampled],
        "distinct_samples": len({c.token_ids for c in sampled[0]}),
    }


if __name__ == "__main__":  # vLLM's engine start needs the guard
    print("AZR-COLOCATE " + json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
