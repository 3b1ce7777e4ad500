"""The `squashd` command line."""

import argparse
import signal
import sys
from collections.abc import Sequence

from tqdm import tqdm

from squash.codec import COMPRESSIONS
from squash.errors import SquashError
from squash.export import export_image
from squash.reference import Platform
from squash.sinks import FileSink, Sink, StreamSink
from squash.sources import open_image

EXAMPLES = """examples:
  squashd export oci:./layout:latest -o app.tar
  squashd export docker-archive:saved.tar -o - | docker load
  squashd export oci:./layout:1.2 -o app.tar --layer-compression gzip --tag app:flat
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squashd", description="Squash container images.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="squash an image into one docker-loadable tar",
        description="Squash SOURCE into one docker-loadable tar with a single layer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("source", metavar="SOURCE", help="oci:DIR[:TAG] or docker-archive:FILE")
    export.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="archive to write; '-' writes to standard output",
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
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        type=Platform.parse,
        help="platform to pick from a multi-platform image (default linux/amd64)",
    )
    export.add_argument(
        "--tmpdir", metavar="DIR", help="where layers are spooled while merging (default $TMPDIR)"
    )
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _export(args: argparse.Namespace) -> None:
    to_stdout = args.output == "-"
    if to_stdout and sys.stdout.isatty():
        raise SquashError(
            "refusing to write an archive to a terminal; redirect -o - or name a file"
        )
    image = open_image(args.source, args.platform)
    sink: Sink = StreamSink(tmpdir=args.tmpdir) if to_stdout else FileSink(args.output)
    show = not args.quiet and sys.stderr.isatty()
    with tqdm(
        total=image.total_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="squashing",
        disable=not show,
        file=sys.stderr,
    ) as bar:
        image.set_progress(bar.update)
        result = export_image(
            image, sink, tag=args.tag, compression=args.layer_compression, tmpdir=args.tmpdir
        )
    if not to_stdout and not args.quiet:
        print(
            f"{args.output}: {result.repo_tag}, layer {result.layer_digest} "
            f"({result.layer_size} bytes)",
            file=sys.stderr,
        )


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
