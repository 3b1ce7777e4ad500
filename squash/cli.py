"""The `squashd` command line."""

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NoReturn

from squash.codec import COMPRESSIONS, check_level
from squash.destination import Destination
from squash.distribution.credentials import Credentials
from squash.distribution.options import DEFAULT_CHUNK, RegistryOptions
from squash.errors import SquashError
from squash.export import ExportResult, Options, export_image, export_index
from squash.image import Image
from squash.image_config import shared_layers
from squash.limits import Limits, parse_size
from squash.oci import JSONObject
from squash.outputs import open_destination
from squash.provenance import Base, Provenance
from squash.reference import (
    DestinationRef,
    Platform,
    SourceRef,
    parse_destination,
    parse_docker_ref,
    parse_source,
)
from squash.sources import list_platforms, open_image

if TYPE_CHECKING:
    from tqdm import tqdm

EXAMPLES = """examples:
  squashd export docker://registry.example.com/team/app:1.4 -o app.tar
  squashd export alpine:3.19 -o - | docker load
  squashd export oci:./layout:latest -o app.tar
  docker save app:1 | squashd export docker-archive:- -o - | docker load
  squashd export oci:./layout:1.2 -o app.tar --layer-compression gzip --tag app:flat
  squashd export docker://registry.example.com/team/app:1.4 --base debian:12 -o app.tar
  squashd export app:1.4 --keep-base 2 -o docker://registry.example.com/team/app:1.4-flat
  squashd export docker-archive:saved.tar -o oci:./layout:flat
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squashd", description="Squash container images.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="squash an image into one docker-loadable tar",
        description="Squash SOURCE into one layer (on top of the layers it keeps), written "
        "as a docker-loadable tar, into an OCI layout, or pushed to a registry.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "source",
        metavar="SOURCE",
        help="docker://HOST/NAME[:TAG|@DIGEST] (or HOST/NAME:TAG), oci:DIR[:TAG], "
        "docker-archive:FILE",
    )
    export.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DEST",
        help="FILE or docker-archive:FILE (a docker load tar; '-': standard output), "
        "oci:DIR[:TAG] (an OCI layout, new or existing), docker://HOST/NAME[:TAG] (a push)",
    )
    export.add_argument(
        "--tag",
        metavar="NAME:TAG",
        help="tag written into the archive (default <name>:<tag>.squash)",
    )
    export.add_argument(
        "--layer-compression",
        choices=COMPRESSIONS,
        default="none",
        help="compression of the squashed layer (default none, as docker save)",
    )
    export.add_argument(
        "--compression-level",
        type=int,
        metavar="N",
        help="gzip 0-9 (default 1; 0-3 are isal's, fast; 4-9 zlib's, smaller and many "
        "times slower), zstd 1-19 (default 3); see docs/cli.md for what each costs",
    )
    partial = export.add_mutually_exclusive_group()
    partial.add_argument(
        "--keep-base",
        metavar="N",
        type=_count,
        default=0,
        help="keep the bottom N layers as they are and squash the ones above them",
    )
    partial.add_argument(
        "--base",
        metavar="REF",
        help="keep the layers the image shares with image REF (the one it was built FROM)",
    )
    export.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        type=Platform.parse,
        help="platform to pick from a multi-platform image (default linux/amd64)",
    )
    export.add_argument(
        "--all-platforms",
        action="store_true",
        help="squash every platform of an index and write an index of them "
        "(oci: and docker:// destinations)",
    )
    export.add_argument(
        "--tmpdir", metavar="DIR", help="where layers are spooled while merging (default $TMPDIR)"
    )
    defaults = Limits()
    export.add_argument(
        "--max-members",
        metavar="N",
        type=_count,
        default=defaults.members,
        help=f"refuse images of more tar members in all (default {defaults.members:,}; 0: any)",
    )
    export.add_argument(
        "--max-image-bytes",
        metavar="SIZE",
        type=_size,
        default=defaults.uncompressed,
        help="refuse images whose layers' tars are larger in all (default 64G; 0: any)",
    )
    export.add_argument(
        "--spool-reserve",
        metavar="SIZE",
        type=_size,
        default=defaults.free_space,
        help="fail before the spool directory has less free space (default 512M)",
    )
    export.add_argument(
        "--provenance",
        metavar="FILE",
        help="also write the provenance statement (in-toto, SLSA v1) to FILE; one line per "
        "squashed image",
    )
    export.add_argument(
        "--no-referrer",
        action="store_true",
        help="do not attach the provenance to the image as a referrer (oci: and docker://)",
    )
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    registry = export.add_argument_group("registry sources")
    registry.add_argument(
        "--creds",
        metavar="USER:PASS",
        type=_credentials,
        help="registry credentials (default: REGISTRY_AUTH_FILE, ~/.docker/config.json)",
    )
    registry.add_argument(
        "--plain-http", action="store_true", help="use http:// (loopback registries always do)"
    )
    registry.add_argument(
        "--tls-verify",
        type=_boolean,
        default=None,
        metavar="BOOL",
        help="check the registry's TLS certificate (default true)",
    )
    registry.add_argument("--ca-file", metavar="PEM", help="CA bundle for the registry's TLS")
    registry.add_argument(
        "--dest-creds",
        metavar="USER:PASS",
        type=_credentials,
        help="credentials for a docker:// destination (default: the auth files, as pulls)",
    )
    registry.add_argument(
        "--push-chunk-size",
        metavar="SIZE",
        type=_size,
        default=DEFAULT_CHUNK,
        help="bytes per PATCH of a chunked upload to a docker:// destination (default 8M)",
    )
    return parser


def _credentials(text: str) -> Credentials:
    try:
        return Credentials.parse(text)
    except SquashError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return int(text)


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _progress_bar(total: int) -> "tqdm[NoReturn]":
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="squashing", file=sys.stderr
    )


def _export(args: argparse.Namespace) -> None:
    check_level(args.layer_compression, args.compression_level)
    destination = parse_destination(args.output)
    to_stdout = destination.transport == "docker-archive" and destination.path == "-"
    if to_stdout and sys.stdout.isatty():
        raise SquashError(
            "refusing to write an archive to a terminal; redirect -o - or name a file"
        )
    options = RegistryOptions(
        plain_http=args.plain_http,
        tls_verify=args.tls_verify,
        ca_file=args.ca_file,
        credentials=args.creds,
    )
    pushing = dataclasses.replace(options, credentials=args.dest_creds)
    where = "standard output" if to_stdout else args.output
    with _source_file(args.source, args.tmpdir) as source:
        platforms = _all_platforms(args, source, destination, options)
        if platforms:
            output = open_destination(destination, pushing, args.tmpdir, args.push_chunk_size)
            _write_index(args, source, platforms, options, output, where)
            return
        image = open_image(source, args.platform, options)
        with contextlib.closing(image):
            keep, base = args.keep_base, None
            if args.base is not None:
                keep, base = _shared(image, args, options)
            output = open_destination(destination, pushing, args.tmpdir, args.push_chunk_size)
            _write(args, image, keep, base, output, where)


def _all_platforms(
    args: argparse.Namespace,
    source: SourceRef,
    destination: DestinationRef,
    options: RegistryOptions,
) -> list[JSONObject]:
    """With --all-platforms, the platforms of SOURCE's index (none for a single image)."""
    if not args.all_platforms:
        return []
    if destination.transport == "docker-archive":
        raise SquashError(
            "a docker load archive holds one platform: choose one with --platform, or "
            "write every platform to oci:DIR or docker://HOST/NAME"
        )
    if args.platform is not None or args.base is not None:
        raise SquashError("--all-platforms squashes every platform: drop --platform and --base")
    return list_platforms(source, options)


def _shared(image: Image, args: argparse.Namespace, options: RegistryOptions) -> tuple[int, Base]:
    """How many bottom layers `image` shares with the --base image (at least one), and
    that image as the squashed one records it."""
    with _source_file(args.base, args.tmpdir) as ref:
        base = open_image(ref, args.platform, options)
        with contextlib.closing(base):
            what = f"image {image.reference}"
            shared = shared_layers(image.config, base.config, what, f"base {args.base}")
        name = None  # a layout path or a `docker save` archive is no name to pull by
        if ref.transport == "docker":
            name = str(parse_docker_ref(ref.text.removeprefix("docker://")))
        recorded = Base(args.base, base.manifest_digest, name)
    if not shared:
        raise SquashError(f"{what} shares no layers with {args.base}")
    if shared == len(image.layers):
        raise SquashError(f"{what} has no layers above {args.base}: nothing to squash")
    return shared, recorded


@contextlib.contextmanager
def _source_file(source: str, tmpdir: str | None) -> Iterator[SourceRef]:
    """The source; `docker-archive:-` (docker save piped in) is spooled to a file first."""
    ref = parse_source(source)
    if ref.transport != "docker-archive" or ref.path != "-":
        yield ref
        return
    if sys.stdin.isatty():
        raise SquashError("docker-archive:- reads a docker save archive from standard input")
    with tempfile.NamedTemporaryFile(prefix="squashd-stdin-", suffix=".tar", dir=tmpdir) as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        f.flush()
        yield dataclasses.replace(ref, path=f.name)


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(args.max_members or None, args.max_image_bytes or None, args.spool_reserve)


def _write_index(
    args: argparse.Namespace,
    source: SourceRef,
    platforms: list[JSONObject],
    options: RegistryOptions,
    output: Destination[None],
    where: str,
) -> None:
    """Each platform squashed in turn, then an index of them."""

    def images() -> Iterator[tuple[Image, JSONObject]]:
        for entry in platforms:
            platform = Platform(entry["os"], entry["architecture"], entry.get("variant"))
            yield open_image(source, platform, options), entry

    squash = Options(
        args.tag, args.layer_compression, args.keep_base, args.tmpdir, _limits(args),
        provenance=_provenance(args, None), level=args.compression_level,
    )  # fmt: skip
    digest, results = export_index(images(), output, squash)
    _write_statements(args, results)
    if not args.quiet:
        for entry, result in zip(platforms, results, strict=True):
            platform = "/".join(entry[k] for k in ("os", "architecture", "variant") if k in entry)
            print(f"{where}: {platform}: {_summary(result)}", file=sys.stderr)
        print(f"{where}: an index of {len(results)} platforms, {digest}", file=sys.stderr)


def _summary(result: ExportResult[None]) -> str:
    base = f" on {result.kept} kept layers" if result.kept else ""
    return (
        f"{result.repo_tag}, {result.stats.members_written} of {result.stats.members_read} "
        f"members kept, layer {result.layer_digest} ({result.layer_size} bytes){base}"
    )


def _provenance(args: argparse.Namespace, base: Base | None) -> Provenance:
    return Provenance(base=base, referrer=not args.no_referrer)


def _write_statements(args: argparse.Namespace, results: list[ExportResult[None]]) -> None:
    """--provenance FILE: the statements, one JSON line each (a tar has no place for
    them; beside the other destinations they are a copy)."""
    if args.provenance is not None:
        with open(args.provenance, "wb") as out:
            out.writelines(result.statement + b"\n" for result in results)


def _write(
    args: argparse.Namespace,
    image: Image,
    keep: int,
    base: Base | None,
    output: Destination[None],
    where: str,
) -> None:
    show = not args.quiet and sys.stderr.isatty()
    with _progress_bar(image.total_size) if show else contextlib.nullcontext() as bar:
        limits = _limits(args)
        result = export_image(
            image,
            output,
            tag=args.tag,
            compression=args.layer_compression,
            level=args.compression_level,
            keep=keep,
            tmpdir=args.tmpdir,
            limits=limits,
            progress=None if bar is None else bar.update,
            provenance=_provenance(args, base),
        )
    _write_statements(args, [result])
    if not args.quiet:
        print(f"{where}: {_summary(result)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse prints its own usage errors
        return int(exc.code or 0)
    # SIGTERM unwinds like Ctrl-C, so the partial output is removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        _export(args)
    except SquashError as exc:
        print(f"squashd: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"squashd: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("SQUASHD_DEBUG"):
            raise
        print(
            f"squashd: internal error: {type(exc).__name__}: {exc} (SQUASHD_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return 70
    return 0


if __name__ == "__main__":
    sys.exit(main())
