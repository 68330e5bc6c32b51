"""The controller-engine command table: every command round-trips through JSON as its typed
model, and an unknown or malformed one is an error that names what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from azr.engine import protocol
from azr.engine.api import CheckpointInfo, GenerationRequest, SamplingSettings, UpdateMetrics
from azr.engine.protocol import Command, EngineError


def _through_json(command: protocol.EngineCommand) -> protocol.EngineCommand:
    return protocol.parse_command(json.loads(json.dumps(protocol.command_message(command))))


def test_every_command_round_trips_as_its_own_model() -> None:
    settings = SamplingSettings(max_new_tokens=4, temperature=0.5, n=2, seed=3)
    commands = [
        protocol.Ping(id=1),
        protocol.Generate(id=2, prompts=Path("/r/p.parquet"), completions=Path("/r/c.parquet"),
                          requests=protocol.request_parts([GenerationRequest(("a", "b"), settings)])),
        protocol.Update(id=3, scored=Path("/r/scored.parquet")),
        protocol.SyncRolloutWeights(id=4),
        protocol.SaveCheckpoint(id=5, root=Path("/r/ck"), step=7, metadata={"update": {"loss": 0.5}}),
        protocol.LoadCheckpoint(id=6, path=Path("/r/ck/step-00000007")),
        protocol.Resume(id=7, root=Path("/r/ck")),
        protocol.ExportWeights(id=8, out_dir=Path("/r/export")),
        protocol.Shutdown(id=9),
        protocol.Stop(),
        protocol.Keepalive(),
    ]
    assert {c.cmd for c in commands} == set(Command)
    for command in commands:
        assert _through_json(command) == command
    generate = _through_json(commands[1])
    assert isinstance(generate, protocol.Generate)
    assert protocol.split_requests(["a", "b"], generate.requests) == [GenerationRequest(("a", "b"), settings)]


def test_an_unknown_command_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(EngineError, match=r"unknown engine command 'train' \(known: ping, generate"):
        protocol.parse_command({"cmd": "train", "id": 1})
    with pytest.raises(EngineError, match="unknown engine command None"):
        protocol.parse_command({"id": 1})


def test_a_malformed_command_names_the_bad_field() -> None:
    with pytest.raises(EngineError, match=r"malformed `update` command: scored: Field required"):
        protocol.parse_command({"cmd": "update", "id": 1})
    with pytest.raises(EngineError, match=r"malformed `ping` command: extra: Extra inputs are not permitted"):
        protocol.parse_command({"cmd": "ping", "id": 1, "extra": True})
    bad_settings = {"cmd": "generate", "id": 1, "prompts": "/p", "completions": "/c",
                    "requests": [{"prompts": 1, "settings": {"max_new_tokens": 0}}]}
    with pytest.raises(EngineError, match=r"requests.0.settings: .*max_new_tokens must be >= 1"):
        protocol.parse_command(bad_settings)
    with pytest.raises(EngineError, match=r"save_checkpoint` command: step: .*greater than or equal to 0"):
        protocol.parse_command({"cmd": "save_checkpoint", "id": 1, "root": "/r", "step": -1})


def test_requests_must_cover_the_prompts_file() -> None:
    parts = protocol.request_parts([GenerationRequest(("a",), SamplingSettings(max_new_tokens=2))])
    with pytest.raises(EngineError, match="cover 1 prompts but its file has 2"):
        protocol.split_requests(["a", "b"], parts)


def test_replies_carry_typed_results() -> None:
    info = CheckpointInfo(Path("/r/ck/step-00000002"), 2, {"update": {"sequences": 2}})
    reply = protocol.CheckpointReply(id=4, info=protocol.CheckpointRecord.of(info))
    parsed = protocol.CheckpointReply.model_validate(json.loads(json.dumps(reply.model_dump(mode="json"))))
    assert parsed.info is not None and parsed.info.info() == info
    assert protocol.CheckpointReply(id=5, info=protocol.CheckpointRecord.of(None)).info is None


def test_update_metrics_survive_the_update_json_record() -> None:
    record = {"loss": 0.1, "pg_loss": 0.2, "entropy": 1.5, "kl": None, "grad_norm": 0.7, "clip_frac": 0.0,
              "tokens": 3, "sequences": 2, "seconds": 0.5, "tokens_per_second": 6.0, "learning_rate": 1e-6,
              "skipped": False, "groups": {"deduction_solve": {"sequences": 2, "tokens": 3, "pg_loss": 0.2,
                                                                  "entropy": 1.5}},
              "world_size": 1, "strategy": "ddp", "off_policy": {"behaviour_coverage": 1.0}, "weight_sync_s": 0.01}
    metrics = UpdateMetrics.from_dict(record)
    assert metrics.groups["deduction_solve"].tokens == 3
    assert metrics.as_dict() == {k: v for k, v in record.items() if k != "weight_sync_s"}


def test_the_rank_loop_answers_a_bad_command_with_its_error_and_keeps_serving(tmp_path: Path) -> None:
    import socket
    import threading
    import time

    from azr.engine.rank.service import Engine, Ranks, _loop

    class Resident:  # the two attributes `ping` reads; the loop and the table are what is tested
        strategy = "ddp"
        weights_version = 3

    controller, rank0 = socket.socketpair()
    engine = Engine(Resident(), Ranks(), tmp_path)  # type: ignore[arg-type]
    exit_code: list[int] = []
    loop = threading.Thread(target=lambda: exit_code.append(_loop(engine, engine.ranks, rank0, 30.0)), daemon=True)
    loop.start()
    with controller, rank0:
        def ask(message: dict) -> dict:
            protocol.send_message(controller, message)
            return protocol.recv_message(controller, time.monotonic() + 30)

        assert ask({"cmd": "train", "id": 1}) == {
            "id": 1, "ok": False, "error": "unknown engine command 'train' (known: ping, generate, update, "
            "sync_rollout_weights, save_checkpoint, load_checkpoint, resume, export_weights, shutdown, stop, keepalive)"}
        refused = ask({"cmd": "update", "id": 2})
        assert refused["ok"] is False and refused["error"] == "malformed `update` command: scored: Field required"
        pong = protocol.PingReply.model_validate(ask(protocol.command_message(protocol.Ping(id=3))))
        assert (pong.id, pong.world_size, pong.strategy, pong.weights_version) == (3, 1, "ddp", 3)
        assert ask(protocol.command_message(protocol.Shutdown(id=4))) == {"id": 4, "ok": True, "elapsed_s": 0.0}
        loop.join(30)
    assert exit_code == [0]
