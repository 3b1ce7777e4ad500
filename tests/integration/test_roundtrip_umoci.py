"""Images built with umoci over several repacks squash to the same root filesystem.

Each image is built once per module; the reference (umoci unpack of the multi-layer
image) is unpacked once and compared with the squashed image for every layer
compression. See helpers.py for the round trip and the tree comparison.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from testbed.tools import run

from .helpers import COMPRESSIONS, T0, UmociImage, roundtrip, snapshot, umoci_unpack

pytestmark = pytest.mark.integration


def write(path: Path, data: bytes | str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)


#: Paths touched while building get this clock's time; stamped ones are far older.
STAMPED_BEFORE = T0 + 10**7


def stamp(fs: Path, layer: int) -> None:
    """Give what this layer touched (mtime = now) a distinct, layer-specific mtime.

    Without it everything umoci writes carries the same second and a squash that took
    a path's attributes from the wrong layer would go unnoticed.
    """
    n = 0
    for dirpath, dirnames, filenames in os.walk(fs):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_mtime > STAMPED_BEFORE:
                n += 1
                t = T0 + layer * 100_000 + n * 7
                os.utime(path, (t, t), follow_symlinks=False)


def build_history_image(root: Path) -> UmociImage:
    """Four layers that add, modify, delete, replace and re-create things.

    umoci re-writes every member of a hard-link group whose link count changed, so the
    "link whose target is deleted higher up" case is exercised for real only by the
    hand-made layers (test_roundtrip_handmade.py); here it is the umoci flavour.
    """
    img = UmociImage(root, name="history", tag="v1")
    fs = img.rootfs

    # Layer 1: the base.
    write(fs / "etc/hosts", "127.0.0.1 localhost\n")
    write(fs / "etc/config", "version=1\n")
    write(fs / "etc/obsolete", "to be deleted\n")
    write(fs / "etc/motd", "a file that becomes a directory\n")
    write(fs / "usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755)
    write(fs / "usr/bin/suid", b"\x7fELF suid", 0o4755)
    write(fs / "usr/bin/sgid", b"\x7fELF sgid", 0o2711)
    (fs / "tmp").mkdir()
    os.chmod(fs / "tmp", 0o1777)
    write(fs / "var/cache/pkg/index", "cached\n")
    write(fs / "var/cache/pkg/sub/deep", "deeper\n")
    write(fs / "srv/data/one", "1\n")
    write(fs / "srv/data/two/three", "3\n")
    write(fs / "opt/app/old1", "old 1\n")
    write(fs / "opt/app/sub/old2", "old 2\n")
    write(fs / "opt/app/keep-name", "old content\n")
    # A hard-link group whose first member is deleted in layer 2.
    write(fs / "data/orig", "linked content\n" * 100, 0o640)
    os.link(fs / "data/orig", fs / "data/link1")
    os.link(fs / "data/orig", fs / "data/link2")
    # A hard-link pair that stays.
    write(fs / "lib/libx.so.1", b"\x7fELF libx" * 50, 0o755)
    os.link(fs / "lib/libx.so.1", fs / "lib/libx-hardlink")
    # Symlinks: absolute, relative, dangling, to a directory.
    os.symlink("usr/bin", fs / "bin")
    (fs / "etc/alternatives").mkdir()
    os.symlink("/usr/bin/tool", fs / "etc/alternatives/editor")
    os.symlink("../../usr/bin/tool", fs / "etc/alternatives/relative")
    os.symlink("/does/not/exist", fs / "etc/dangling")
    write(fs / "home/user/file", "owned\n")
    os.chown(fs / "home/user/file", 1000, 1000)
    os.chown(fs / "home/user", 1000, 1000)
    write(fs / "home/big/ids", "big uid and gid\n")
    os.chown(fs / "home/big/ids", 2000000, 2000001)
    write(fs / "empty-file", "")
    stamp(fs, 1)
    img.commit("base")

    # Layer 2: modify, delete, replace a directory by a file and a file by a directory.
    write(fs / "etc/config", "version=2\n")
    (fs / "etc/obsolete").unlink()
    shutil.rmtree(fs / "var/cache")
    shutil.rmtree(fs / "srv/data")
    write(fs / "srv/data", "now a file\n")
    (fs / "etc/motd").unlink()
    write(fs / "etc/motd/10-welcome", "now a directory\n")
    shutil.rmtree(fs / "opt/app")
    (fs / "data/orig").unlink()
    os.chmod(fs / "usr/bin/tool", 0o700)
    os.chmod(fs / "etc/hosts", 0o4644)
    os.chown(fs / "home/user/file", 2000, 3000)
    os.unlink(fs / "etc/alternatives/editor")
    os.symlink("/usr/bin/other", fs / "etc/alternatives/editor")
    stamp(fs, 2)
    img.commit("modify and delete")

    # Layer 3: re-create the deleted directory with new children; links across layers.
    write(fs / "opt/app/new1", "new 1\n")
    write(fs / "opt/app/keep-name", "new content\n")
    (fs / "opt/app/emptydir").mkdir()
    write(fs / "etc/motd/20-more", "more\n")
    os.link(fs / "etc/config", fs / "etc/config-hardlink")
    write(fs / "var/log/app.log", "log\n")
    stamp(fs, 3)
    img.commit("re-create")

    # Layer 4: delete what layer 3 added, replace a file by a symlink and a symlink by a
    # file, delete the target of the cross-layer hard link, chmod a directory.
    (fs / "var/log/app.log").unlink()
    (fs / "etc/config").unlink()
    (fs / "etc/hosts").unlink()
    os.symlink("/etc/hosts.real", fs / "etc/hosts")
    write(fs / "etc/hosts.real", "127.0.0.1 localhost real\n")
    (fs / "etc/dangling").unlink()
    write(fs / "etc/dangling", "a file now\n")
    os.chmod(fs / "opt/app", 0o750)
    os.chown(fs / "opt/app", 10, 20)
    stamp(fs, 4)
    img.commit("finish")

    img.config(
        "--config.env",
        "PATH=/usr/bin:/bin",
        "--config.cmd",
        "/usr/bin/tool",
        "--config.workingdir",
        "/opt/app",
    )
    return img


@pytest.fixture(scope="module")
def history(tools, module_work: Path) -> tuple[UmociImage, Path]:
    """The image and its reference root filesystem (umoci unpack of all four layers)."""
    img = build_history_image(module_work / "build")
    assert len(img.manifest()["layers"]) == 4
    reference = umoci_unpack(img.ref, module_work / "reference.bundle")
    check_reference(reference)
    return img, reference


def check_reference(fs: Path) -> None:
    """The scenario is what the tests think it is (a check of umoci and of this file)."""
    tree = snapshot(fs)
    assert b"etc/obsolete" not in tree
    assert b"var/cache" not in tree and b"var" in tree
    assert tree[b"srv/data"].kind == "regular file"
    assert tree[b"etc/motd"].kind == "directory"
    assert sorted(p for p in tree if p.startswith(b"opt/app/")) == [
        b"opt/app/emptydir",
        b"opt/app/keep-name",
        b"opt/app/new1",
    ]
    assert (fs / "opt/app/keep-name").read_text() == "new content\n"
    assert b"data/orig" not in tree
    assert tree[b"data/link1"].ino == tree[b"data/link2"].ino
    assert (fs / "data/link1").read_text() == "linked content\n" * 100
    assert tree[b"lib/libx.so.1"].ino == tree[b"lib/libx-hardlink"].ino
    assert b"etc/config" not in tree
    assert (fs / "etc/config-hardlink").read_text() == "version=2\n"
    assert tree[b"usr/bin/suid"].mode == 0o4755
    assert tree[b"usr/bin/sgid"].mode == 0o2711
    assert tree[b"tmp"].mode == 0o1777
    assert tree[b"etc/hosts"].target == b"/etc/hosts.real"
    assert tree[b"home/user/file"].uid == 2000
    assert (tree[b"home/big/ids"].uid, tree[b"home/big/ids"].gid) == (2000000, 2000001)
    assert tree[b"opt/app"].mode == 0o750


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_history_image_roundtrip(tools, history, work: Path, compression: str) -> None:
    img, reference = history
    roundtrip(img.source, work, reference=reference, compression=compression)


def test_docker_archive_source(tools, history, work: Path) -> None:
    """The same image as a classic `docker save` archive (written by skopeo) squashes alike."""
    img, reference = history
    archive = work / "classic.tar"
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            f"oci:{img.ref}",
            f"docker-archive:{archive}:example.com/ns/history:v1",
        ]
    )
    roundtrip(f"docker-archive:{archive}", work, reference=reference, compression="gzip")


def test_docker_schema2_manifest_in_an_oci_layout(tools, history, work: Path) -> None:
    """The same image with a Docker schema 2 manifest and Docker layer media types."""
    img, reference = history
    layout = work / "v2s2"
    run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--format",
            "v2s2",
            f"oci:{img.ref}",
            f"oci:{layout}:t",
        ]
    )
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][0]["mediaType"] == (
        "application/vnd.docker.distribution.manifest.v2+json"
    )
    roundtrip(f"oci:{layout}:t", work, reference=reference, compression="none")


def test_squashing_a_squashed_archive_is_stable(tools, history, work: Path) -> None:
    """A squashed archive (the Docker 25+ layout) is itself a valid source."""
    img, reference = history
    first = roundtrip(img.source, work / "first", reference=reference, compression="zstd")
    roundtrip(
        f"docker-archive:{first.archive}",
        work / "second",
        reference=reference,
        compression="none",
    )


def test_single_layer_image(tools, work: Path) -> None:
    """The trivial case: one layer in, the same tree out."""
    img = UmociImage(work / "build", name="single", tag="latest")
    write(img.rootfs / "hello.txt", "hello\n")
    os.symlink("hello.txt", img.rootfs / "greeting")
    img.commit()
    roundtrip(img.source, work, reference=img.ref, compression="gzip")


def test_many_small_layers(tools, work: Path) -> None:
    """Twelve layers, each rewriting, adding and removing a little."""
    img = UmociImage(work / "build", name="many", tag="t")
    fs = img.rootfs
    for i in range(12):
        write(fs / "counter", f"{i}\n")
        write(fs / f"layer{i}/file", f"layer {i}\n")
        if i >= 2:
            shutil.rmtree(fs / f"layer{i - 2}")
        if i % 3 == 0:
            write(fs / "toggle", f"on {i}\n")
        elif (fs / "toggle").exists():
            (fs / "toggle").unlink()
        img.commit(f"step {i}")
    result = roundtrip(img.source, work, reference=img.ref, compression="none", check=False)
    tree = snapshot(result.original)
    assert sorted(p for p in tree if p.startswith(b"layer") and b"/" not in p) == [
        b"layer10",
        b"layer11",
    ]
    result.assert_ok()
