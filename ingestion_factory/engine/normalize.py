"""An image's config re-stamped with its SOURCE_DATE_EPOCH, so its ID follows from its inputs alone.

BuildKit before 0.11 (Docker 20.10's) writes the build's clock into the config's `created` and into every
history entry it adds. The layers themselves are already reproducible (the Dockerfiles clamp what they
write, see images/base/layer.py); this writes the same config with those times replaced, and loads it: a
`docker load` of a config and a manifest.json whose layers the engine already holds reads no layer, and
the new image's ID is the sha256 of the config written here.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import FactoryError
from .docker_engine import JSON, Engine, ImageMissing

# Dockerfile instructions that change only the config: their history entries have no layer.
METADATA_INSTRUCTIONS = ("ARG", "ENV", "LABEL", "USER", "ENTRYPOINT", "CMD", "EXPOSE", "VOLUME", "STOPSIGNAL",
                         "HEALTHCHECK", "SHELL", "ONBUILD", "MAINTAINER")
CLASSIC_NOP = "/bin/sh -c #(nop) "
# Container-config fields the engine fills in with defaults: left out when empty, as BuildKit leaves them.
CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal",
               "Healthcheck", "Shell", "OnBuild", "ArgsEscaped")


class NormalizeError(FactoryError):
    """The image's config could not be re-stamped (its history does not match its layers)."""


@dataclass(frozen=True)
class Restamped:
    image_id: str
    seconds: float
    existed: bool = False  # the engine had this very image already (the same inputs built before): not ours to remove


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _has_layer(entry: JSON) -> bool:
    if entry.get("Size", 0) > 0:
        return True
    command = (entry.get("CreatedBy") or "").removeprefix(CLASSIC_NOP).strip()
    return command.split(" ", 1)[0].upper() not in METADATA_INSTRUCTIONS


def history(entries: list[JSON], parent_entries: int, epoch: int, layers: int) -> list[JSON]:
    """The config's history from the engine's (newest first, as /images/{id}/history gives it): the parent's
    entries keep their times, this image's own get `epoch`."""
    oldest_first = list(reversed(entries))
    out: list[JSON] = []
    for index, entry in enumerate(oldest_first):
        record: JSON = {"created": rfc3339(epoch if index >= parent_entries else int(entry.get("Created") or 0))}
        if entry.get("CreatedBy"):
            record["created_by"] = entry["CreatedBy"]
        if entry.get("Comment"):
            record["comment"] = entry["Comment"]
        if not _has_layer(entry):
            record["empty_layer"] = True
        out.append(record)
    with_layers = sum(1 for record in out if not record.get("empty_layer"))
    if with_layers != layers:
        raise NormalizeError(f"the image's history names {with_layers} layers, its root file system has {layers}")
    return out


def config_of(info: JSON, history_entries: list[JSON], parent_entries: int, epoch: int) -> bytes:
    """The image config (the JSON whose sha256 is the image ID) for an `inspect` result, re-stamped."""
    container = info.get("Config") or {}
    layers = list(info["RootFS"]["Layers"])
    config: dict[str, Any] = {
        "architecture": info["Architecture"],
        "os": info["Os"],
        "config": {key: container[key] for key in CONFIG_KEYS if container.get(key)},
        "created": rfc3339(epoch),
        "history": history(history_entries, parent_entries, epoch, len(layers)),
        "rootfs": {"type": "layers", "diff_ids": layers},
    }
    if info.get("Variant"):
        config["variant"] = info["Variant"]
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def load_archive(config: bytes, layers: list[str]) -> bytes:
    """A `docker load` archive of the config and a manifest naming the layers, without the layers themselves."""
    name = hashlib.sha256(config).hexdigest() + ".json"
    manifest: list[JSON] = [{"Config": name, "RepoTags": None,
                 "Layers": [f"{diff_id.split(':', 1)[1]}/layer.tar" for diff_id in layers]}]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for member, data in ((name, config), ("manifest.json", json.dumps(manifest).encode())):
            entry = tarfile.TarInfo(member)
            entry.size, entry.mode = len(data), 0o644
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def restamp(engine: Engine, image_id: str, parent_id: str | None, epoch: int) -> Restamped:
    """Load `image_id` again with `created` and its own history entries at `epoch`; the new image's ID.

    The image BuildKit wrote stays (its caller removes it once nothing needs it). `parent_id` is the image it
    was built FROM (None: none): when the image starts with its layers, the parent's history entries keep
    their times (a base starts FROM scratch: all of its entries get `epoch`).
    """
    started = time.monotonic()
    info = engine.inspect_raw(image_id)
    parent_entries = 0
    if parent_id:  # built on its parent's layers: the parent's entries are the parent's, with its times
        parent_layers = engine.inspect_raw(parent_id)["RootFS"]["Layers"]
        if info["RootFS"]["Layers"][:len(parent_layers)] == parent_layers:
            parent_entries = len(engine.history(parent_id))
    config = config_of(info, engine.history(image_id), parent_entries, epoch)
    new_id = "sha256:" + hashlib.sha256(config).hexdigest()
    existed = engine.inspect(new_id) is not None  # the very image, built before from the same inputs
    if not existed:
        for message in engine.load([load_archive(config, info["RootFS"]["Layers"])]):
            if isinstance(message, dict) and message.get("error"):
                raise NormalizeError(f"docker load of the re-stamped config of {image_id[:19]}: {message['error']}")
        try:
            engine.inspect_raw(new_id)
        except ImageMissing:
            raise NormalizeError(f"the engine loaded the re-stamped config of {image_id[:19]} but has no "
                                 f"{new_id[:19]}") from None
    return Restamped(new_id, time.monotonic() - started, existed)
