"""The squashed image's config: what the image runs with, the kept layers (a partial squash)
and the squashed one, the kept layers' history and one entry for the squashed part."""

from typing import Any

from squash.errors import SquashError
from squash.oci import dumps

# Top-level config fields that describe how the image runs (its `config` object holds
# Env, Entrypoint, Cmd, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal,
# Healthcheck, ...); build-time leftovers such as container_config are dropped.
_KEPT = ("created", "author", "architecture", "os", "os.version", "os.features", "variant")


def diff_ids(config: dict[str, Any], what: str) -> list[str]:
    """The config's `rootfs.diff_ids`, checked to be a list of strings."""
    found = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(found, list) or not all(isinstance(d, str) for d in found):
        raise SquashError(f"{what}: config has no list of rootfs.diff_ids")
    return found


def shared_layers(config: dict[str, Any], base: dict[str, Any], what: str, base_what: str) -> int:
    """How many bottom layers an image shares with `base` (the common prefix of their
    diff_ids)."""
    shared = 0
    for mine, theirs in zip(diff_ids(config, what), diff_ids(base, base_what), strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared


def _kept_history(history: object, keep: int) -> list[Any]:
    """The history entries of the bottom `keep` layers: entries up to the one of layer
    `keep` (empty-layer entries between them included); entries a config lacks are made,
    so that each layer keeps one."""
    entries = history if isinstance(history, list) else []
    kept: list[Any] = []
    layers = 0
    for entry in entries:
        if layers == keep:
            break
        kept.append(entry)
        if not (isinstance(entry, dict) and entry.get("empty_layer")):
            layers += 1
    kept += [{"created_by": "squashd: a kept layer without history"}] * (keep - layers)
    return kept


def squashed_config(source: dict[str, Any], keep: int, diff_id: str, comment: str) -> bytes:
    """The config of the image whose layers are the source's bottom `keep` ones and then
    the squashed one (`diff_id`)."""
    config: dict[str, Any] = {key: source[key] for key in _KEPT if key in source}
    config["config"] = source.get("config") or {}
    kept = diff_ids(source, "the image")[:keep] if keep else []
    config["rootfs"] = {"type": "layers", "diff_ids": [*kept, diff_id]}
    history: dict[str, Any] = {"created_by": "squashd export", "comment": comment}
    if "created" in source:
        history["created"] = source["created"]
    config["history"] = [*_kept_history(source.get("history"), keep), history]
    return dumps(config)
