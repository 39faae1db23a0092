"""Each process type runs the Procfile's own command everywhere it is deployed.

The Procfile is the one home of each command; the Dockerfile's default command (web), the compose
services and the Kubernetes workloads repeat it because their formats need it written out, so
these tests keep every copy equal to it (``$PORT`` stands for the port each platform sets: 8000).
The post-deploy step is no Procfile type but a one-off of the release's image: POST_DEPLOY here is
its one home, which the compose service, the Kubernetes Job and the Heroku recipe repeat.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from processes.procfile import process_commands

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
PORT = "8000"
POST_DEPLOY = "python manage.py migrate --contract --noinput"
APP_IMAGE = "formation"  # every manifest's name of the formation's image (kustomization.yaml sets the build)


def procfile_argv(kind: str) -> list[str]:
    """Return the Procfile's command of ``kind`` as an argv, ``exec`` dropped and $PORT set."""
    words = shlex.split(process_commands()[kind].replace("$PORT", PORT))
    return words[1:] if words[:1] == ["exec"] else words


def dockerfile_cmd() -> list[str]:
    [line] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    argv = json.loads(line.removeprefix("CMD "))
    assert argv[:2] == ["sh", "-c"], argv  # a shell, only to read PORT from the environment
    words = shlex.split(re.sub(r"\$\{?PORT\}?", PORT, argv[2]))
    return words[1:] if words[:1] == ["exec"] else words


def compose_commands() -> dict[str, list[str]]:
    """Return the command of each compose service built from the formation's image, by service name."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    built = {name: service for name, service in services.items() if "build" in service}
    return {name: service.get("command") or dockerfile_cmd() for name, service in built.items()}


def kubernetes_commands() -> dict[str, list[str]]:
    """Return the command of each Deployment and Job of the formation's image, by its
    ``app.kubernetes.io/component`` label (PgBouncer, an image of its own, is not one)."""
    commands = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] in {"Deployment", "Job"}:
                component = document["metadata"]["labels"]["app.kubernetes.io/component"]
                for container in document["spec"]["template"]["spec"]["containers"]:
                    if container["image"] == APP_IMAGE:  # not web's proxy beside it
                        commands[component] = container.get("command") or dockerfile_cmd()
    return commands


def test_the_images_default_command_is_the_procfiles_web():
    assert dockerfile_cmd() == procfile_argv("web")


@pytest.mark.parametrize("kind", list(process_commands()))
def test_compose_runs_the_procfiles_command(kind):
    assert compose_commands()[kind] == procfile_argv(kind)


@pytest.mark.parametrize("kind", list(process_commands()))
def test_kubernetes_runs_the_procfiles_command(kind):
    assert kubernetes_commands()[kind] == procfile_argv(kind)


def test_every_deployed_command_is_checked():
    """Each compose service and Kubernetes workload of the image is a Procfile type or the post-deploy step."""
    expected = {*process_commands(), "post-deploy"}
    assert set(compose_commands()) == expected
    assert set(kubernetes_commands()) == expected


def test_the_post_deploy_step_runs_one_command_everywhere():
    assert "post-deploy" not in process_commands(), "a one-off, never a process type that a platform starts"
    assert compose_commands()["post-deploy"] == shlex.split(POST_DEPLOY)
    assert kubernetes_commands()["post-deploy"] == shlex.split(POST_DEPLOY)
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    assert f"heroku run {POST_DEPLOY}" in deployment
    assert "docker compose run --rm post-deploy" in deployment
