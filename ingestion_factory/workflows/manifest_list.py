"""Manifest lists (one tag, several platforms): the document, its read-back check, and which tags it goes under.

`inv push --platform linux/amd64 --platform linux/arm64` pushes each platform's verified image under a
tag of its own (`<version>-amd64`, `<version>-arm64`), then stores a manifest list naming those manifests
under the image's plain tags (version, commit, `latest`); push.py does the pushing, this module the
documents. A client pulling `<image>:<version>` gets the variant of its architecture.

A push that covers only some platforms (`--platform linux/arm64` after an amd64 push) keeps, in the list
it stores under a plain tag, the entries that tag already holds for the platforms it does not push
(`kept_entries`): the tag never loses a platform nobody asked to replace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..documents import DocumentError, load_json
from ..model.plan import Plan, PlanItem
from ..platforms import ALIASES, Platform

LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
IMAGE_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Entry:
    """One platform's manifest as a manifest list names it."""

    platform: Platform
    digest: str
    size: int
    media_type: str = IMAGE_TYPE


def index_document(entries: list[Entry]) -> bytes:
    """The manifest list, serialized once: its digest is the sha256 of exactly these bytes."""
    document = {
        "schemaVersion": 2,
        "mediaType": LIST_TYPE,
        "manifests": [{"mediaType": e.media_type, "size": e.size, "digest": e.digest,
                       "platform": e.platform.index_entry()} for e in entries],
    }
    return json.dumps(document, indent=3).encode()


def platform_digests(document: dict | None) -> dict[str, str]:
    """platform name ("linux/arm64") -> digest, from a manifest list or OCI index read back."""
    found = {}
    for manifest in (document or {}).get("manifests", []):
        platform = manifest.get("platform") or {}
        found[f"{platform.get('os')}/{platform.get('architecture')}"] = manifest.get("digest", "")
    return found


def check_read_back(document: dict | None, media_type: str, expected: dict[str, str]) -> str | None:
    """Why a manifest list read back is not the one stored, or None when every platform's digest matches."""
    if media_type not in (LIST_TYPE, OCI_INDEX_TYPE):
        return f"the registry serves a {media_type or 'manifest of unknown type'}, not a manifest list"
    found = platform_digests(document)
    for platform, digest in expected.items():
        if found.get(platform) != digest:
            return f"{platform} is {found.get(platform) or 'missing'}, the push ended with {digest}"
    extra = sorted(set(found) - set(expected))
    if extra:
        return f"the list also names {', '.join(extra)}"
    return None


def platform_of(os_name: object, architecture: object, variant: object = "") -> Platform | None:
    """The platform a list entry or an image config names; None when it names none (an attestation's
    `unknown/unknown`, a missing field)."""
    if not isinstance(os_name, str) or not isinstance(architecture, str) or not os_name or not architecture \
            or "unknown" in (os_name, architecture):
        return None
    known = ALIASES.get(f"{os_name}/{architecture}")
    if known is not None:
        return known
    return Platform(os_name, architecture, variant if isinstance(variant, str) else "")


def list_entries(document: dict | None) -> list[Entry]:
    """The entries of a manifest list (or OCI index) read back that name a platform, in its order."""
    found = []
    for manifest in (document or {}).get("manifests") or []:
        if not isinstance(manifest, dict):
            continue
        platform = manifest.get("platform") if isinstance(manifest.get("platform"), dict) else {}
        named = platform_of(platform.get("os"), platform.get("architecture"), platform.get("variant", ""))
        digest, size = manifest.get("digest"), manifest.get("size")
        if named and isinstance(digest, str) and isinstance(size, int):
            found.append(Entry(named, digest, size, str(manifest.get("mediaType") or IMAGE_TYPE)))
    return found


def config_platform(data: bytes | None) -> Platform | None:
    """The platform an image config blob names (its `os` and `architecture`), or None."""
    if data is None:
        return None
    try:
        config = load_json(data, what="an image config")
    except DocumentError:
        return None
    if not isinstance(config, dict):
        return None
    return platform_of(config.get("os"), config.get("architecture"), config.get("variant", ""))


def kept_entries(pushed: list[Entry], there: list[Entry], covered: set[str]) -> list[Entry]:
    """The entries already under a tag that the list stored there keeps: those of platforms this push
    neither covers nor pushed, one per platform, in the tag's order."""
    taken = covered | {entry.platform.name for entry in pushed}
    kept: list[Entry] = []
    for entry in there:
        if entry.platform.name not in taken:
            kept.append(entry)
            taken.add(entry.platform.name)
    return kept


def plain_tags(items: list[PlanItem]) -> list[str]:
    """The tags the manifest list goes under: the default platform's, else a variant's without its suffix."""
    for item in items:
        if item.platform.is_default:
            return list(item.tags)
    first = items[0]
    return [tag.removesuffix(first.platform.suffix) for tag in first.tags]


def group(plans: list[Plan]) -> dict[str, list[PlanItem]]:
    """Image name -> its item on every platform it exists on, in the order of the platforms given."""
    grouped: dict[str, list[PlanItem]] = {}
    for plan in plans:
        for item in plan:
            grouped.setdefault(item.name, []).append(item)
    return grouped
