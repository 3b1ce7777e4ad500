"""The deployment files under deploy/ (compose.yaml, kubernetes/) parse and stay in step
with the code: the image they run is this version's, they run every Procfile process
type and nothing else, every SQUASHD_* variable they set is one the code reads, the web
is probed on /healthz and /readyz and scraped on /metrics. tests/image runs the image
they name: its programs, and compose.yaml's containers."""

from __future__ import annotations

import tomllib

import pytest

from tests.deploy.manifests import (
    KUBERNETES,
    Container,
    compose_containers,
    kubernetes_containers,
    kubernetes_documents,
    process_kind,
    procfile,
    variables_the_code_reads,
)
from tests.shipped import REPO

DEPLOYMENTS = {"compose": compose_containers, "kubernetes": kubernetes_containers}


@pytest.fixture(params=sorted(DEPLOYMENTS))
def containers(request: pytest.FixtureRequest) -> list[Container]:
    found: list[Container] = DEPLOYMENTS[request.param]()
    assert found, f"{request.param}: no squashd containers found"
    return found


def test_kustomization_names_every_kubernetes_file() -> None:
    files = kubernetes_documents()
    (kustomization,) = files.pop(KUBERNETES / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(path.name for path in files)


def test_they_run_this_version_of_the_image(containers: list[Container]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    wrong = [c.where for c in containers if c.image != f"squashd:{version}"]
    assert not wrong, f"not squashd:{version}: {wrong}"


def test_they_run_every_procfile_process_type(containers: list[Container]) -> None:
    wanted = sorted(process_kind(argv) for argv in procfile().values())
    assert sorted({process_kind(c.command) for c in containers}) == wanted


def test_every_squashd_variable_they_set_is_read_by_the_code(
    containers: list[Container],
) -> None:
    read = variables_the_code_reads()
    assert {"SQUASHD_STORAGE_URL", "SQUASHD_TMPDIR"} <= read  # the scan finds them
    unread = {
        f"{c.where}: {name}"
        for c in containers
        for name in c.env
        if name.startswith("SQUASHD_") and name not in read
    }
    assert not unread, f"set, but read by no code: {sorted(unread)}"


def test_the_web_is_probed_and_scraped_where_it_answers() -> None:
    (web,) = [c for c in kubernetes_containers() if c.command == ["squashd-web"]]
    assert web.raw["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web.raw["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (deployment,) = [
        doc
        for docs in kubernetes_documents().values()
        for doc in docs
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "squashd-web"
    ]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
