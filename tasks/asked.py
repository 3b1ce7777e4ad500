"""What is asked to be built, checked before any registry is asked: an image reference
and the export's options, each one not given defaulting to the service's
(SQUASHD_PLATFORM, SQUASHD_LAYER_COMPRESSION at SQUASHD_COMPRESSION_LEVEL, the tag the
command line writes, a full squash). The web's requests and the scheduled pre-squash ask alike.
"""

from dataclasses import dataclass

from squash.codec import COMPRESSIONS
from squash.errors import BadReference
from squash.reference import DockerRef, Platform, check_repo_tag, parse_docker_ref
from tasks.errors import BadRequest, Denied
from tasks.settings import Settings
from tasks.spec import ExportSpec, default_tag


@dataclass(frozen=True)
class Asked:
    """A request's options, checked; `spec` once its reference is resolved."""

    ref: DockerRef
    platform: str
    tag: str | None
    compression: str
    keep_base: int
    level: int | None = None  # SQUASHD_COMPRESSION_LEVEL, for the service's own compression

    def spec(self, digest: str) -> ExportSpec:
        ref = self.ref
        reference = ref.digest or ref.tag or "latest"
        tag = self.tag or default_tag(ref.registry, ref.repository, reference)
        return ExportSpec(
            ref.registry, ref.repository, reference, digest, self.platform, tag,
            self.compression, self.keep_base, self.level,
        )  # fmt: skip


def ask(
    image: str,
    settings: Settings,
    *,
    platform: str | None = None,
    tag: str | None = None,
    compression: str | None = None,
    keep_base: int = 0,
) -> Asked:
    """The export of `image` (`[docker://][HOST/]NAME[:TAG|@DIGEST]`) asked for, checked:
    400 for what is malformed, 403 for a registry not served here."""
    try:
        ref = parse_docker_ref(image.removeprefix("docker://"))
        platform = str(Platform.parse(platform)) if platform else settings.default_platform
        if tag is not None:  # each tag is a build of the same bytes: quotas bound it
            name, out = check_repo_tag(tag)
            tag = f"{name}:{out}"
    except BadReference as exc:
        raise BadRequest(str(exc)) from None
    compression = compression or settings.layer_compression
    if compression not in COMPRESSIONS:
        raise BadRequest(f"layer compression {compression!r} is not one of {COMPRESSIONS}")
    if keep_base < 0:
        raise BadRequest(f"keep_base {keep_base} is not a number of layers")
    if not settings.allows(ref.registry):
        raise Denied(
            f"registry {ref.registry} is not served here (SQUASHD_ALLOWED_REGISTRIES)", 403
        )
    level = settings.compression_level if compression == settings.layer_compression else None
    return Asked(ref, platform, tag, compression, keep_base, level)


def has_default_options(spec: ExportSpec, settings: Settings) -> bool:
    """Built with the options a plain /c1 request (and the pre-squash) uses?"""
    return (spec.platform, spec.compression, spec.tag, spec.keep_base, spec.level) == (
        settings.default_platform,
        settings.layer_compression,
        default_tag(spec.registry, spec.repository, spec.reference),
        0,
        settings.compression_level,
    )
