"""What can be checked of ``images/Dockerfile`` without Docker (no base image can be pulled here; the kind
path builds them): each image's target exists, runs ``warmserve`` as the chart's non-root user, its
entrypoint is the node agent's image table's, it exposes the port the chart or the WorkerPool default
uses and health-checks that port, and the base image is pinned to a patch release."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from e2e.harness.images import IMAGE_ENTRYPOINTS
from tests.chart.helm import CHART, REPO, find, helm_binary, rendered
from warmserve.operator.resources import WORKER_IMAGE

__all__ = ["helm_binary"]
DOCKERFILE = REPO / "images" / "Dockerfile"


@dataclass
class Stage:
    """One build stage with what it inherits from the stage it is built ``FROM``."""

    base: str
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    expose: list[int] = field(default_factory=list)
    healthcheck: str = ""


def stages() -> dict[str, Stage]:
    """Every named stage of the Dockerfile, USER/ENTRYPOINT/EXPOSE/HEALTHCHECK inherited from its parent."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        instruction, rest = words[0].upper(), (words[1] if len(words) > 1 else "")
        if instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            parent = out.get(base.strip())
            current = Stage(base.strip()) if parent is None else Stage(base.strip(), **_inherited(parent))
            out[name.strip()] = current
        elif current is not None and instruction == "USER":
            current.user = rest.strip()
        elif current is not None and instruction == "ENTRYPOINT":
            current.entrypoint = json.loads(rest)
        elif current is not None and instruction == "EXPOSE":
            current.expose = [int(p) for p in rest.split()]
        elif current is not None and instruction == "HEALTHCHECK":
            current.healthcheck = rest
    return out


def _inherited(parent: Stage) -> dict[str, object]:
    return {
        "user": parent.user,
        "entrypoint": list(parent.entrypoint),
        "expose": list(parent.expose),
        "healthcheck": parent.healthcheck,
    }


def worker_default_port() -> int:
    crd = yaml.safe_load((REPO / "crds" / "warmserve.io_workerpools.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return int(spec["port"]["default"])


@pytest.mark.parametrize("target", ["operator", "gateway", "worker", "worker-torch", "worker-vllm"])
def test_every_image_runs_warmserve_as_the_charts_non_root_user(
    target: str, helm_binary: Path, tmp_path: Path
) -> None:
    stage = stages()[target]
    objects = rendered(helm_binary, tmp_path)
    chart_user = find(objects, "Deployment", "warmserve-operator")["spec"]["template"]["spec"][
        "securityContext"
    ]
    assert stage.user == str(chart_user["runAsUser"]) != "0"
    image = WORKER_IMAGE if target.startswith("worker") else f"warmserve/{target}"
    assert tuple(stage.entrypoint) == IMAGE_ENTRYPOINTS[image]


def test_the_ports_and_health_checks_agree_with_the_chart_and_the_workerpool_default(
    helm_binary: Path, tmp_path: Path
) -> None:
    built = stages()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    ports = {
        "operator": values["operator"]["healthPort"],
        "gateway": values["gateway"]["port"],
        "worker": worker_default_port(),
    }
    for target, port in ports.items():
        assert built[target].expose == [port], target
        assert re.search(rf"127\.0\.0\.1:{port}/healthz", built[target].healthcheck), target
    objects = rendered(helm_binary, tmp_path)
    repositories = {
        d["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0]
        for d in objects
        if d["kind"] == "Deployment"
    }
    assert repositories | {WORKER_IMAGE} == set(IMAGE_ENTRYPOINTS)


def test_the_base_image_is_pinned_to_a_patch_release() -> None:
    pinned = re.search(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)\.(\d+)-slim", DOCKERFILE.read_text(), re.M)
    assert pinned is not None
    assert all(s.base in ("${PYTHON_IMAGE}", *stages()) for s in stages().values())
