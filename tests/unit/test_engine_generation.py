"""The transformers generation backend on a tiny random model: samples per prompt, stop reasons,
greedy and seeded determinism, length grouping that restores the caller's order."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from azr.config.schema import RolloutConfig
from azr.engine.api import Completion, SamplingSettings
from azr.engine.rollout.transformers_backend import TransformersBackend, plan_batches
from azr.engine.models.loading import tiny_model

PROMPTS = [
    "def f(a):\n    return a",
    "Hi",
    "Write a function that sorts a list of numbers and returns the median value.",
    "x = [1, 2, 3]",
]


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    return tiny_model(0, tokenizer=tokenizer)


@pytest.fixture
def backend(model: Any, tokenizer: Any) -> TransformersBackend:
    return TransformersBackend(model, tokenizer)


def _ids(tokenizer: Any, prompt: str) -> tuple[int, ...]:
    return tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def _check_consistent(completion: Completion, backend: TransformersBackend, max_new_tokens: int) -> None:
    ids = completion.token_ids
    eos = set(backend.eos_token_ids)
    assert 1 <= len(ids) <= max_new_tokens
    assert not eos & set(ids[:-1]), "nothing may follow an EOS token"
    if completion.finish_reason == "stop":
        assert ids[-1] in eos
    else:
        assert completion.finish_reason == "length"
        assert len(ids) == max_new_tokens and ids[-1] not in eos
    assert completion.text == backend.tokenizer.decode(list(ids), skip_special_tokens=True)


def test_n_samples_per_prompt_with_their_prompt_ids(backend: TransformersBackend, tokenizer: Any) -> None:
    settings = SamplingSettings(max_new_tokens=6, n=3, seed=5)
    results = backend.generate(PROMPTS, settings)
    assert [len(r) for r in results] == [3] * len(PROMPTS)
    for prompt, completions in zip(PROMPTS, results):
        for completion in completions:
            assert completion.prompt_token_ids == _ids(tokenizer, prompt)
            _check_consistent(completion, backend, 6)
        assert len({c.token_ids for c in completions}) > 1, "sampled completions should differ"


def test_stop_at_eos_and_cut_at_length(model: Any, tokenizer: Any) -> None:
    greedy = SamplingSettings(max_new_tokens=8, temperature=0)
    free = TransformersBackend(model, tokenizer).generate([PROMPTS[0]], greedy)[0][0]
    assert free.finish_reason == "length" and len(free.token_ids) == 8
    stopper = free.token_ids[3]  # declare a token the model will emit to be an EOS token
    first = free.token_ids.index(stopper)
    stopped = TransformersBackend(model, tokenizer, eos_token_ids=[stopper]).generate([PROMPTS[0]], greedy)[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: first + 1]
    assert stopped.text == tokenizer.decode(list(free.token_ids[: first + 1]), skip_special_tokens=True)


def test_greedy_is_deterministic_and_matches_bare_generate(backend: TransformersBackend, model: Any, tokenizer: Any) -> None:
    settings = SamplingSettings(max_new_tokens=7, temperature=0, n=2)
    first = backend.generate(PROMPTS, settings)
    assert first == backend.generate(PROMPTS, settings)
    assert all(c[0] == c[1] for c in first), "greedy samples of one prompt are identical"
    ids = torch.tensor([_ids(tokenizer, PROMPTS[2])])
    bare = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=7, do_sample=False)
    assert first[2][0].token_ids == tuple(bare[0, ids.shape[1]:].tolist())


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng(backend: TransformersBackend) -> None:
    settings = SamplingSettings(max_new_tokens=6, n=2, seed=11)
    state = torch.get_rng_state()
    first = backend.generate(PROMPTS, settings)
    assert torch.equal(state, torch.get_rng_state())
    assert first == backend.generate(PROMPTS, settings)
    other = backend.generate(PROMPTS, SamplingSettings(max_new_tokens=6, n=2, seed=12))
    assert other != first


def test_length_grouping_restores_the_callers_order(model: Any, tokenizer: Any) -> None:
    backend = TransformersBackend(model, tokenizer, max_batch_size=2)
    calls: list[int] = []
    original = model.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.generate = counting
    try:
        # Greedy: a sampled prompt's stream is keyed by its index in the request, so only a
        # greedy result follows its prompt to another position.
        settings = SamplingSettings(max_new_tokens=5, temperature=0)
        forward = backend.generate(PROMPTS, settings)
        permutation = [2, 0, 3, 1]
        permuted = backend.generate([PROMPTS[i] for i in permutation], settings)
    finally:
        del model.generate
    assert calls == [2, 2, 2, 2], "4 prompts in micro-batches of 2, twice"
    assert permuted == [forward[i] for i in permutation]
    for prompt, completions in zip(PROMPTS, forward):
        assert completions[0].prompt_token_ids == _ids(tokenizer, prompt)


def test_checkpoint_sampling_defaults_are_ignored(backend: TransformersBackend, model: Any, tokenizer: Any) -> None:
    settings = SamplingSettings(max_new_tokens=6, temperature=0)
    reference = backend.generate(PROMPTS[:2], settings)
    saved = model.generation_config
    model.generation_config = type(saved)(**{**saved.to_dict(), "repetition_penalty": 50.0, "top_k": 1})
    try:
        assert backend.generate(PROMPTS[:2], settings) == reference
        assert model.generation_config.repetition_penalty == 50.0, "the model's config is restored"
    finally:
        model.generation_config = saved


def test_empty_prompt_and_bare_string_are_refused(backend: TransformersBackend) -> None:
    settings = SamplingSettings(max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        backend.generate(["a", ""], settings)
    with pytest.raises(TypeError, match="not one string"):
        backend.generate("abc", settings)  # type: ignore[arg-type]
    assert backend.generate([], settings) == []


def test_plan_batches_respects_the_budget_and_covers_every_row() -> None:
    lengths = [5, 40, 12, 40, 3, 30, 7]
    batches = plan_batches(lengths, max_new_tokens=10, max_batch_tokens=120, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) * (max(lengths[i] for i in batch) + 10) <= 120
    assert batches[0] == [1, 3], "the longest rows come first"
    assert plan_batches([500], 10, 100, 4) == [[0]], "a row over budget still runs, alone"


def test_sampling_settings_from_the_run_config() -> None:
    rollout = RolloutConfig(temperature=0.8, top_p=0.9, top_k=40, max_new_tokens=64, mc_samples=8, mc_temperature=1.0, seed=7)
    assert SamplingSettings.from_rollout(rollout) == SamplingSettings(64, 0.8, 0.9, 40, 1, 7)
    mc = SamplingSettings.monte_carlo(rollout, seed=9)
    assert (mc.n, mc.temperature, mc.seed) == (8, 1.0, 9)
    assert SamplingSettings(4, temperature=0).greedy
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": 0}, {"n": 0}):
        with pytest.raises(ValueError):
            SamplingSettings(**{"max_new_tokens": 4, **bad})
