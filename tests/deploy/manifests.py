"""The deployment files under deploy/ read as the suite checks them: the squashd
containers they run (compose services, Kubernetes pod containers) with their commands
and the variables they set, the Procfile's process types beside them, and the SQUASHD_*
variables the shipped code reads."""

from __future__ import annotations

import ast
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.shipped import REPO, shipped_modules, shipped_packages

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"


@dataclass(frozen=True)
class Container:
    """A squashd container a deployment file runs."""

    where: str  # the file and the service or workload, for messages
    image: str
    command: list[str]
    env: dict[str, str]  # the variables it is given, as written
    raw: dict[str, Any]  # the container's (or service's) own mapping


def documents(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def compose_containers(path: Path = COMPOSE) -> list[Container]:
    """The services running a squashd image (YAML merge keys resolved by the loader)."""
    (compose,) = documents(path)
    return [
        Container(f"{path.name}: {name}", s["image"], s["command"], s.get("environment", {}), s)
        for name, s in compose["services"].items()
        if s["image"].startswith("squashd:")
    ]


def kubernetes_documents(directory: Path = KUBERNETES) -> dict[Path, list[dict[str, Any]]]:
    return {path: documents(path) for path in sorted(directory.glob("*.yaml"))}


def kubernetes_containers(directory: Path = KUBERNETES) -> list[Container]:
    """The containers of the workloads running a squashd image; their variables are
    their `env` and the ConfigMaps they take whole (`envFrom`)."""
    docs = [doc for found in kubernetes_documents(directory).values() for doc in found]
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    found = []
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            if not c["image"].startswith("squashd:"):
                continue
            env = {}
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(config_maps[source["configMapRef"]["name"]])
            env.update({e["name"]: e.get("value", "") for e in c.get("env", [])})
            where = f"{doc['kind']} {doc['metadata']['name']}/{c['name']}"
            found.append(Container(where, c["image"], [*c["command"], *c.get("args", [])], env, c))
    return found


def procfile(path: Path = REPO / "Procfile") -> dict[str, list[str]]:
    """Process type: its command, without the variables assigned in front of it."""
    processes = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        argv = shlex.split(command)
        while argv and "=" in argv[0] and not argv[0].startswith("-"):
            argv.pop(0)
        processes[name.strip()] = argv
    return processes


def process_kind(argv: list[str]) -> tuple[str, ...]:
    """What a command runs, options aside: the program, and for Celery its app, its
    subcommand and the queues it serves (`celery -A worker worker -Q squashd.export`)."""
    if argv[0] != "celery":
        return (argv[0],)
    app = argv[argv.index("-A") + 1]
    subcommand = argv[argv.index("-A") + 2]
    queues = argv[argv.index("-Q") + 1] if "-Q" in argv else ""
    return ("celery", app, subcommand, queues)


def variables_the_code_reads(root: Path = REPO) -> set[str]:
    """Every SQUASHD_* string constant in the shipped Python code: the names it looks up."""
    files = [root / f"{module}.py" for module in shipped_modules(root)]
    for package in shipped_packages(root):
        files += (root / package.replace(".", "/")).glob("*.py")
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and str(node.value).startswith("SQUASHD_"):
                names.add(str(node.value))
    return names
