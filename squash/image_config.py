"""The squashed image's config: what the image runs with, one layer, one history entry."""

import json
from typing import Any

# Top-level config fields that describe how the image runs (its `config` object holds
# Env, Entrypoint, Cmd, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal,
# Healthcheck, ...); build-time leftovers such as container_config are dropped.
_KEPT = ("created", "author", "architecture", "os", "os.version", "os.features", "variant")


def squashed_config(source: dict[str, Any], diff_id: str, comment: str) -> bytes:
    config: dict[str, Any] = {key: source[key] for key in _KEPT if key in source}
    config["config"] = source.get("config") or {}
    config["rootfs"] = {"type": "layers", "diff_ids": [diff_id]}
    history: dict[str, Any] = {"created_by": "squashd export", "comment": comment}
    if "created" in source:
        history["created"] = source["created"]
    config["history"] = [history]
    return json.dumps(config, separators=(",", ":")).encode()
