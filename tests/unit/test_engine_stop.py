"""Stopping the engine's command at a step boundary (azr.engine.interrupt, azr.engine.rank.stop_hooks):
inside a forward and a backward pass, in generation, in the update (no partial gradient kept),
in a checkpoint save (nothing of it kept), and the controller's `stop` read during a command."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from azr.engine import interrupt, protocol
from azr.engine.api import SamplingSettings, TrainSequence
from azr.engine.models.loading import tiny_model
from azr.engine.rank.stop_hooks import install_stop_hooks
from azr.engine.rollout.transformers_backend import TransformersBackend
from azr.engine.training.checkpoints import latest_checkpoint, save_checkpoint
from azr.engine.training.trrpp_update import TRRPPUpdate, UpdateSettings

BATCH = [
    TrainSequence([5, 6, 7], [100, 200, 300], "deduction_solve", 1.0),
    TrainSequence([8, 9], [11, 12, 13], "deduction_solve", -1.0),
    TrainSequence([40, 41], [50, 51, 52, 53], "induction_propose", 0.7),
]


@pytest.fixture
def stop_requested() -> Iterator[threading.Event]:
    """The engine's stop flag, cleared after the test whatever it did."""
    yield interrupt._requested
    interrupt._requested.clear()


def _trainer() -> TRRPPUpdate:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True)
    model = tiny_model(0)
    install_stop_hooks(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    return TRRPPUpdate(model, optimizer, accelerator, UpdateSettings(micro_batch_size=1))


def test_every_decoder_layer_is_a_step_boundary_of_the_forward_and_the_backward(stop_requested: threading.Event) -> None:
    model = tiny_model(0)
    assert install_stop_hooks(model) == model.config.num_hidden_layers
    assert install_stop_hooks(model) == 0  # once
    ids = torch.tensor([[5, 6, 7, 8]])
    model(ids).logits.sum().backward()  # no stop asked: nothing changes
    stop_requested.set()
    with pytest.raises(interrupt.CommandStopped, match="inside a forward pass"):
        model(ids)
    stop_requested.clear()
    loss = model(ids).logits.sum()
    stop_requested.set()  # asked for between the forward and the backward
    with pytest.raises(interrupt.CommandStopped, match="inside a backward pass"):
        loss.backward()


def test_a_stop_ends_generation_before_its_first_token(tokenizer: Any, stop_requested: threading.Event) -> None:
    model = tiny_model(0, tokenizer=tokenizer)
    install_stop_hooks(model)
    backend = TransformersBackend(model, tokenizer)
    settings = SamplingSettings(max_new_tokens=4, temperature=0)
    assert len(backend.generate(["def f(a):\n    return a"], settings)) == 1
    stop_requested.set()  # the prefill of a long prompt stops inside, before any token
    with pytest.raises(interrupt.CommandStopped):
        backend.generate(["def f(a):\n    return a"], settings)


def test_a_stopped_update_keeps_no_gradient_and_the_next_one_is_unchanged(fresh_accelerate: None,
                                                                          stop_requested: threading.Event) -> None:
    reference = _trainer()
    expected = reference.step(BATCH).loss
    trainer = _trainer()
    calls = {"n": 0}

    def stop_in_the_second_micro_batch(module: torch.nn.Module, args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # a layer of the second micro-batch (the tiny model has 2 layers)
            stop_requested.set()

    layer = trainer.accelerator.unwrap_model(trainer.model).model.layers[0]
    handle = layer.register_forward_pre_hook(stop_in_the_second_micro_batch, prepend=True)
    with pytest.raises(interrupt.CommandStopped):
        trainer.step(BATCH)
    handle.remove()
    stop_requested.clear()
    assert all(p.grad is None for p in trainer.model.parameters())  # the first micro-batch's gradient is gone
    assert trainer.steps == 0
    assert trainer.step(BATCH).loss == pytest.approx(expected, rel=1e-6)  # as if the stopped one never ran


def test_a_stopped_checkpoint_save_leaves_nothing(fresh_accelerate: None, tokenizer: Any, tmp_path: Path,
                                                  stop_requested: threading.Event) -> None:
    trainer = _trainer()
    stop_requested.set()
    with pytest.raises(interrupt.CommandStopped, match="checkpoint save"):
        save_checkpoint(trainer.accelerator, trainer.model, tokenizer, tmp_path, 1)
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no temporary directory
    stop_requested.clear()
    assert latest_checkpoint(save_checkpoint(trainer.accelerator, trainer.model, tokenizer, tmp_path, 1).parent) is not None


def test_the_stop_message_is_read_during_a_command_and_forgotten_after() -> None:
    controller, rank = socket.socketpair()
    try:
        with interrupt.watch(rank):
            assert not interrupt.requested()
            protocol.send_message(controller, protocol.command_message(protocol.Stop()))
            deadline = time.monotonic() + 30
            while not interrupt.requested():
                assert time.monotonic() < deadline, "the stop was never read"
                time.sleep(0.01)
            with pytest.raises(interrupt.CommandStopped, match="generation"):
                interrupt.stop_point("generation")
        assert not interrupt.requested()  # the next command starts clean
        with interrupt.watch(rank):  # a closed connection means stop as well: nobody waits for the answer
            controller.close()
            deadline = time.monotonic() + 30
            while not interrupt.requested():
                assert time.monotonic() < deadline, "the closed connection was never seen"
                time.sleep(0.01)
    finally:
        rank.close()
        controller.close()
