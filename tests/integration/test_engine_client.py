"""The controller-engine channel: messages and exchange files, the launcher command, and a
real 1-rank engine (tiny model) driven through `EngineClient`: it runs without Prefect, a
failed command is an error that leaves it usable, a hung rank is an error within the call's
timeout with nothing left running, and the interface the pipeline uses works end to end."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from azr.config.loading import build_config
from azr.engine import protocol
from azr.engine.controller.client import EngineClient
from azr.engine.api import Completion, SamplingSettings
from azr.engine.controller.launch import SERVICE_MODULE, launch_command
from azr.engine.protocol import EngineError
from azr.engine.api import TrainSequence


def test_messages_round_trip_and_refuse_what_is_not_json() -> None:
    left, right = socket.socketpair()
    with left, right:
        protocol.send_message(left, {"cmd": "ping", "id": 1, "nested": {"x": [1, 2.5, None]}})
        assert protocol.recv_message(right, time.monotonic() + 5) == {"cmd": "ping", "id": 1, "nested": {"x": [1, 2.5, None]}}
        with pytest.raises(TypeError):
            protocol.send_message(left, {"obj": object()})  # no pickle fallback
        with pytest.raises(socket.timeout):
            protocol.recv_message(right, time.monotonic() + 0.1)
        left.sendall(b"\xff\xff\xff\xff")
        with pytest.raises(EngineError, match="refusing a message"):
            protocol.recv_message(right, time.monotonic() + 5)


def test_completion_files_keep_prompt_and_sample_order(tmp_path: Path) -> None:
    completions = [[Completion("a", (5, 2), (1,), "stop"), Completion("b", (6,), (1,), "length")], [],
                   [Completion("", (), (3, 4), "length")]]
    protocol.write_completions(tmp_path / "c.parquet", completions)
    assert protocol.read_completions(tmp_path / "c.parquet", 3) == completions
    protocol.write_prompts(tmp_path / "p.parquet", ["x", "y\nz"])
    assert protocol.read_prompts(tmp_path / "p.parquet") == ["x", "y\nz"]


def test_launch_command_per_layout(tmp_path: Path) -> None:
    one = launch_command(build_config("tiny"), tmp_path, port=29511, cpu=True)
    assert "--cpu" in one and "--multi_gpu" not in one and one[one.index("--num_processes") + 1] == "1"
    assert one[-4:] == ["-m", SERVICE_MODULE, "--run-dir", str(tmp_path.resolve())]
    two = launch_command(build_config("tiny", overrides=["trainer.processes=2"]), tmp_path, port=29511, cpu=True)
    assert "--multi_gpu" in two and "--cpu" not in two  # torchrun gloo ranks on CPU
    machines = build_config("tiny", overrides=["trainer.processes=4", "engine.num_machines=2",
                                               "engine.main_process_ip=10.0.0.1", "engine.main_process_port=29400"])
    second = launch_command(machines, tmp_path, machine_rank=1, cpu=False)
    for flag, value in (("--num_processes", "4"), ("--num_machines", "2"), ("--machine_rank", "1"),
                        ("--main_process_ip", "10.0.0.1"), ("--main_process_port", "29400")):
        assert second[second.index(flag) + 1] == value
    with pytest.raises(ValueError, match="machine rank 2"):
        launch_command(machines, tmp_path, machine_rank=2)


def test_multi_machine_settings_are_checked() -> None:
    from azr.config.loading import ConfigError

    with pytest.raises(ConfigError, match="main_process_port"):
        build_config("tiny", overrides=["engine.num_machines=2", "trainer.processes=2"])
    with pytest.raises(ConfigError, match="multiple of engine.num_machines"):
        build_config("tiny", overrides=["engine.num_machines=2", "trainer.processes=3", "engine.main_process_port=29400"])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture()
def no_prefect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `prefect` package first on the engine's path that fails on import."""
    shim = tmp_path / "shim" / "prefect"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('the engine must not import prefect')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.timeout(900)
def test_a_one_rank_engine_without_prefect_serves_the_policy_interface(tmp_path: Path, no_prefect: None) -> None:
    config = build_config("tiny", overrides=["engine.update_timeout_s=20"])
    client = EngineClient.start(config, tmp_path / "run")
    try:
        assert (client.world_size, client.strategy) == (1, "ddp")
        completions = client.generate(["def f(a):", "x = 1"], SamplingSettings(max_new_tokens=4, n=2, seed=3))
        assert [len(c) for c in completions] == [2, 2]
        assert completions[0][0].prompt_token_ids == tuple(client.tokenizer("def f(a):", add_special_tokens=False)["input_ids"])
        assert client.generate(["def f(a):", "x = 1"], SamplingSettings(max_new_tokens=4, n=2, seed=3)) == completions
        with pytest.raises(EngineError, match="prompt 1 is empty"):
            client.generate(["x", ""], SamplingSettings(max_new_tokens=4))
        assert client.ping()["world_size"] == 1  # a failed command leaves the engine usable
        metrics = client.update([TrainSequence([1, 2, 3], [4, 5], "deduction_solve", 1.0),
                                 TrainSequence([1, 2], [7], "abduction_solve", -1.0)])
        assert metrics.sequences == 2 and metrics.as_dict()["world_size"] == 1
        saved = client.save_checkpoint(tmp_path / "checkpoints", 1, {"update": metrics.as_dict()})
        info = client.resume(tmp_path / "checkpoints")
        assert (info.path, info.step, info.metadata["update"]["sequences"]) == (saved, 1, 2)
        exported = client.export_weights(tmp_path / "export")
        assert (exported / "config.json").is_file() and (exported / "model.safetensors").is_file()
        assert list((tmp_path / "run" / "engine" / "io").iterdir()) == []  # exchange files removed
        ranks = [r["pid"] for r in client.ranks]

        os.kill(ranks[0], signal.SIGSTOP)  # a hung rank
        started = time.monotonic()
        with pytest.raises(EngineError, match=r"did not finish `update` within 20 s \(engine.update_timeout_s\)"):
            client.update([TrainSequence([1, 2, 3], [4, 5], "deduction_solve", 1.0)])
        assert time.monotonic() - started < 60
        with pytest.raises(EngineError, match="cannot take `ping`"):
            client.ping()
    finally:
        client.close()
    assert client.process.poll() is not None
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in ranks)


def test_an_engine_that_cannot_start_is_one_error(tmp_path: Path) -> None:
    config = build_config("tiny", overrides=["engine.python=/no/such/python"])
    with pytest.raises(EngineError, match=r"cannot start the engine with /no/such/python.*engine.python"):
        EngineClient.start(config, tmp_path / "run")


def test_the_kubernetes_indexed_job_starts_a_valid_multi_node_run() -> None:
    import re

    import yaml

    manifest = Path(__file__).resolve().parents[2] / "infra" / "kubernetes" / "engine-indexed-job.yaml"
    service, job = list(yaml.safe_load_all(manifest.read_text()))
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    script = container["args"][0]
    assert "azr engine launch" in script and '--machine-rank "$JOB_COMPLETION_INDEX"' in script
    overrides = re.findall(r"-s (\S+)", script)
    values = {"$GPUS_PER_MACHINE": env["GPUS_PER_MACHINE"], "$MACHINES": env["MACHINES"],
              "$PROCESSES": str(int(env["MACHINES"]) * int(env["GPUS_PER_MACHINE"]))}
    resolved = []
    for item in overrides:
        item = item.replace('"', "")
        for key, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
            item = item.replace(key, value)
        resolved.append(item)
    config = build_config(env["PRESET"], overrides=resolved)
    assert config.engine.num_machines == spec["completions"]
    assert config.engine.main_process_ip == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert config.trainer.world_size() == spec["completions"] * container["resources"]["limits"]["nvidia.com/gpu"]


@pytest.mark.timeout(900)
def test_the_engine_dies_with_its_controller(tmp_path: Path) -> None:
    """SIGKILL the controller (no exit hooks run): the launcher and every rank go too."""
    import json
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from azr.config.loading import build_config\n"
        "from azr.engine.controller.client import EngineClient\n"
        "client = EngineClient.start(build_config('tiny', overrides=['trainer.processes=2']), sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    controller = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], stdout=subprocess.PIPE,
                                  text=True, start_new_session=True)
    try:
        assert controller.stdout.readline().strip() == "ready"
        started = json.loads((tmp_path / "run" / "engine" / "ranks.json").read_text())
        pids = [started["launcher"], *(r["pid"] for r in started["ranks"])]
        assert all(_alive(pid) for pid in pids)
        controller.kill()
        controller.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)
    finally:
        if controller.poll() is None:
            controller.kill()
