"""Artifact keys: one per set of bytes, stable across processes and versions of Python."""

import dataclasses

import pytest

from tasks.spec import FORMAT_VERSION, ExportSpec, default_tag

SPEC = ExportSpec(
    "127.0.0.1:5000", "ns/app", "v1", "sha256:" + "a" * 64, "linux/amd64",
    "127.0.0.1:5000/ns/app:v1.squash", "gzip",
)  # fmt: skip


def test_the_key_is_stable_and_plain() -> None:
    assert SPEC.key == ExportSpec.from_dict(SPEC.to_dict()).key
    assert len(SPEC.key) == 64 and int(SPEC.key, 16) >= 0
    assert FORMAT_VERSION == 2  # bump it when the writer's bytes change; keys change with it


@pytest.mark.parametrize(
    "change",
    [
        {"digest": "sha256:" + "b" * 64},
        {"platform": "linux/arm64"},
        {"tag": "other:1"},
        {"compression": "zstd"},
        {"repository": "ns/other"},
        {"registry": "127.0.0.1:5001"},
        {"keep_base": 2},
        {"level": 6},
    ],
)
def test_every_determinant_changes_the_key(change: dict) -> None:
    assert dataclasses.replace(SPEC, **change).key != SPEC.key


def test_a_full_squash_keeps_the_key_it_had_before_partial_squashes() -> None:
    """keep_base 0 adds nothing to the key: artifacts built before it existed stay found;
    a record without the field reads as 0."""
    assert SPEC.key == "103be9626346236ebf150f39c6d92ede0635451ac88084f8362ddd3309a2a375"
    record = {k: v for k, v in SPEC.to_dict().items() if k != "keep_base"}
    assert ExportSpec.from_dict(record) == SPEC
    partial = dataclasses.replace(SPEC, keep_base=3)
    assert ExportSpec.from_dict(partial.to_dict()) == partial


def test_the_default_level_keeps_the_key_it_had_before_levels() -> None:
    """No level (the compression's default) adds nothing to the key; a record without
    the field reads as the default, and a level survives the round trip."""
    record = {k: v for k, v in SPEC.to_dict().items() if k != "level"}
    assert ExportSpec.from_dict(record) == SPEC
    assert SPEC.to_dict()["level"] == ""
    leveled = dataclasses.replace(SPEC, level=0)
    assert ExportSpec.from_dict(leveled.to_dict()) == leveled
    assert leveled.key != SPEC.key


def test_the_tag_asked_for_does_not_name_the_bytes() -> None:
    """A tag and the digest it resolves to give one artifact (the tag written in is what
    differs, and it is part of the spec)."""
    assert dataclasses.replace(SPEC, reference=SPEC.digest).key == SPEC.key


def test_names_of_what_is_built() -> None:
    assert SPEC.source == f"docker://127.0.0.1:5000/ns/app@{SPEC.digest}"
    assert SPEC.image == "127.0.0.1:5000/ns/app:v1"
    assert dataclasses.replace(SPEC, reference=SPEC.digest).image.endswith(f"@{SPEC.digest}")
    assert SPEC.filename == "ns_app_v1.squash.tar"


def test_default_tags() -> None:
    assert default_tag("docker.io", "library/alpine", "3.19") == "alpine:3.19.squash"
    assert default_tag("quay.io", "org/app", "1") == "quay.io/org/app:1.squash"
    digest = "sha256:" + "c" * 64
    assert default_tag("quay.io", "org/app", digest) == "quay.io/org/app:digest-cccccccccccc.squash"
