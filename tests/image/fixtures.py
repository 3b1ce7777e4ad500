"""Fixtures of the image tests: squashd's image built once per run the way `make image`
builds it (deploy/build_image.py: dist/squashd-image.tar), and loaded from that archive
into the tests' private dockerd."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.build_image import ROOT, tags
from testbed.daemons import Dockerd
from testbed.tools import run
from tests.install.wheels import Wheel


@dataclass(frozen=True)
class BuiltImage:
    archive: Path  # dist/squashd-image.tar
    wheel: Wheel  # squashd's own, of dist/wheels: what the image installed
    tag: str  # squashd:VERSION, loaded into the tests' dockerd


@pytest.fixture(scope="session")
def squashd_image(dockerd: Dockerd) -> BuiltImage:
    run([sys.executable, ROOT / "deploy" / "build_image.py"], timeout=1800)
    archive = ROOT / "dist" / "squashd-image.tar"
    (wheel,) = (ROOT / "dist" / "wheels").glob("squashd-*.whl")
    loaded = dockerd.load(archive)
    assert sorted(loaded) == sorted(tags()), f"docker load named {loaded}, not {tags()}"
    return BuiltImage(archive, Wheel(wheel), tags()[0])
