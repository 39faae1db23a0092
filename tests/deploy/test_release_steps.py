"""Every deploy recipe runs the release's steps in order, from one build.

The release phase (expand migrations) before the new processes, the post-deploy step (contract
migrations) after them, the workers and mailers held until the schema is ready, and one image tag
that is also the release id every process reports (docs/deployment.md, docs/releases.md).
``kubectl kustomize`` is not on every machine, so the kustomization's ``images:`` and
``replacements:`` are applied here to the files as read; where kubectl is on the PATH its own
rendering is checked the same way.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
IMAGE = "formation"  # the one image name of every manifest; kustomization.yaml's images: sets the build
POST_DEPLOY = ["python", "manage.py", "migrate", "--contract", "--noinput"]
SCHEMA_GATE = ["python", "manage.py", "migrate", "--check"]
GATED = ("worker", "mailer")  # web waits on its readiness probe (/ready); the scheduler touches Redis only
WORKLOADS = ("Deployment", "Job")
POOLER = "pgbouncer"  # a Deployment of an image of its own: no build or release of ours
PROXY = "proxy"  # web's buffering proxy, a container of nginx's image beside it: no build of ours either


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def manifests() -> list[dict]:
    documents = []
    for name in kustomization()["resources"]:
        documents += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    return documents


def workloads(documents: list[dict]) -> dict[str, dict]:
    """The Deployments and Jobs of the formation's image, by name (the pooler's is not one)."""
    return {
        doc["metadata"]["name"]: doc
        for doc in documents
        if doc["kind"] in WORKLOADS and doc["metadata"]["name"] != POOLER
    }


def containers(workload: dict) -> list[dict]:
    """The containers of a workload that run the formation's image (not web's proxy)."""
    pod = workload["spec"]["template"]["spec"]
    return [c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] != PROXY]


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def app_services() -> dict[str, dict]:
    """The compose services built from the formation's own image (the ``x-app`` anchor)."""
    return {name: s for name, s in compose()["services"].items() if s.get("build")}


# A small part of kustomize, enough for this kustomization: images (name, newName, newTag) and
# replacements whose field paths use plain keys, "*" and "[name=…]" (kustomize's own syntax).
def _walk(node, parts: list[str], path: str) -> list:
    """Return the parents and keys that ``parts`` reach from ``node``; fail like kustomize when none."""
    if not parts:
        return [node]
    part, rest = parts[0], parts[1:]
    if part == "*":
        assert isinstance(node, list), f"{path}: * on a non-list"
        return [found for item in node for found in _walk(item, rest, path)]
    if selector := re.fullmatch(r"\[(\w+)=(.*)\]", part):
        key, value = selector.groups()
        assert isinstance(node, list), f"{path}: {part} on a non-list"
        return [found for item in node if item.get(key) == value for found in _walk(item, rest, path)]
    assert isinstance(node, dict) and part in node, f"unable to find field {path!r}"
    return [(node, part)] if not rest else _walk(node[part], rest, path)


def field_slots(document: dict, path: str) -> list[tuple[dict, str]]:
    slots = _walk(document, path.split("."), path)
    assert slots, f"unable to find field {path!r} in {document['metadata']['name']}"
    return slots


def matches(doc: dict, select: dict) -> bool:
    return doc["kind"] == select.get("kind", doc["kind"]) and doc["metadata"]["name"] == select.get(
        "name", doc["metadata"]["name"]
    )


def selected(documents: list[dict], select: dict, reject: list[dict] = ()) -> list[dict]:
    return [doc for doc in documents if matches(doc, select) and not any(matches(doc, r) for r in reject)]


def kustomize(documents: list[dict], config: dict) -> list[dict]:
    """Apply ``config``'s images, then its replacements (kustomize's order) to ``documents`` in place."""
    images = {image["name"]: image for image in config.get("images", [])}
    for workload in workloads(documents).values():
        for container in containers(workload):
            if image := images.get(container["image"]):
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for replacement in config.get("replacements", []):
        source = replacement["source"]
        [source_doc] = selected(documents, source)
        [(parent, key)] = field_slots(source_doc, source["fieldPath"])
        value = str(parent[key])
        if options := source.get("options"):
            value = value.split(options["delimiter"])[options["index"]]
        for target in replacement["targets"]:
            docs = selected(documents, target["select"], target.get("reject", []))
            assert docs, f"no resource matches {target['select']}"
            for doc in docs:
                for path in target["fieldPaths"]:
                    for parent, key in field_slots(doc, path):
                        parent[key] = value
    return documents


def assert_one_build(documents: list[dict], tag: str) -> None:
    """Every container of every workload runs ``newName:tag`` and says RELEASE_VERSION=``tag``."""
    image = kustomization()["images"][0]
    found = workloads(documents)
    assert {"formation-release", "formation-post-deploy", "web", "worker", "scheduler", "mailer"} <= set(found)
    for name, workload in found.items():
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            assert container["image"] == f"{image['newName']}:{tag}", where
            assert env(container).get("RELEASE_VERSION") == tag, where


def test_the_kustomization_has_the_release_and_the_post_deploy_jobs():
    resources = kustomization()["resources"]
    assert "release-job.yaml" in resources and "post-deploy-job.yaml" in resources
    jobs = {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == "Job"}
    assert set(jobs) == {"formation-release", "formation-post-deploy"}
    components = {name: job["metadata"]["labels"]["app.kubernetes.io/component"] for name, job in jobs.items()}
    assert components == {"formation-release": "release", "formation-post-deploy": "post-deploy"}
    # Every manifest of the folder is a resource: nothing is left to be applied by hand.
    assert set(resources) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_post_deploy_job_runs_the_contract_migrations_once():
    post_deploy = workloads(manifests())["formation-post-deploy"]
    [container] = post_deploy["spec"]["template"]["spec"]["containers"]
    assert container["command"] == POST_DEPLOY
    assert post_deploy["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # It refuses while a process of the previous release lives (a worker in its 90 s grace period):
    # the Job's retries are the wait, each pause twice the last from 10 s (at most 6 min), and the
    # deadline leaves room for all of them.
    retries = post_deploy["spec"]["backoffLimit"]
    assert retries >= 5
    assert post_deploy["spec"]["activeDeadlineSeconds"] > sum(min(10 * 2**n, 360) for n in range(retries))


def test_every_manifest_names_the_one_image_and_no_latest():
    for name, workload in workloads(manifests()).items():
        for container in containers(workload):
            assert container["image"] == IMAGE, f"{name}/{container['name']}: image comes from kustomization.yaml"
    for path in [*K8S.glob("*.yaml"), ROOT / "docker-compose.yml"]:
        assert ":latest" not in path.read_text(), path.name
    [image] = kustomization()["images"]
    assert image["name"] == IMAGE
    assert isinstance(image["newTag"], str) and image["newTag"] not in {"", "latest"}
    # The release id is read from the image as the text after its first ":": no registry port.
    assert ":" not in image["newName"]


def test_release_version_comes_from_the_image_tag_for_every_container():
    config = kustomization()
    assert_one_build(kustomize(manifests(), config), config["images"][0]["newTag"])
    # One place: another tag moves every image and every RELEASE_VERSION with it.
    config["images"][0]["newTag"] = "2.3.4-rc.1"
    assert_one_build(kustomize(manifests(), config), "2.3.4-rc.1")


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not on the PATH")
def test_kubectl_kustomize_renders_one_build():
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 and "unknown command" in result.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert_one_build(documents, kustomization()["images"][0]["newTag"])


def test_workers_and_mailers_wait_for_the_schema():
    found = workloads(manifests())
    for name in GATED:
        pod = found[name]["spec"]["template"]["spec"]
        [main] = pod["containers"]
        [gate] = pod.get("initContainers", [{}])
        assert gate.get("command") == SCHEMA_GATE, name
        assert gate["image"] == main["image"], name
        assert gate["envFrom"] == main["envFrom"], name
        assert gate["securityContext"] == main["securityContext"], name
        assert gate["resources"]["requests"] and gate["resources"]["limits"], name
        assert "RELEASE_VERSION" in env(gate), name


def test_compose_runs_the_post_deploy_step_only_when_asked():
    services = compose()["services"]
    post_deploy = services["post-deploy"]
    assert post_deploy["command"] == POST_DEPLOY
    assert post_deploy["profiles"] == ["post-deploy"], "docker compose up never starts it"
    assert post_deploy["restart"] == "no"
    assert post_deploy["image"] == services["web"]["image"]
    assert "release" not in post_deploy.get("depends_on", {}), "running it must not run the release again"
    assert "profiles" not in services["release"]


def test_compose_tags_the_image_and_names_the_release_from_one_variable():
    services = app_services()
    assert {"release", "post-deploy", "web", "worker", "scheduler", "mailer"} <= set(services)
    for name, service in services.items():
        assert service["image"] == "formation:${RELEASE_VERSION:-dev}", name
        assert service["environment"]["RELEASE_VERSION"] == "${RELEASE_VERSION:-dev}", name
