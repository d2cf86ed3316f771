"""What images are called in registries: the host, the repository, the cache tag of an input hash, and which
tags the factory itself gives an image (so it may take them back)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..platforms import KNOWN, Platform, split_ref
from ..settings import Settings

DOCKER_HUB = "docker.io"
HUB_ALIASES = {"", "docker.io", "index.docker.io", "registry-1.docker.io"}


def canonical_host(registry: str) -> str:
    host = registry.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    return DOCKER_HUB if host in HUB_ALIASES else host


def target_repository(settings: Settings, registry: str, image_name: str) -> str:
    """registry/namespace/image, or namespace/image for Docker Hub."""
    host = canonical_host(registry)
    prefix = "" if host == DOCKER_HUB else host
    return "/".join(part for part in (prefix, settings.namespace, image_name) if part)


def repository_on(registry: str, repository: str) -> str:
    """The same repository path on another registry: `old-host/ns/image` or `ns/image` -> `registry/ns/image`."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        repository = rest  # drop the registry it was built for
    host = canonical_host(registry)
    return repository if host == DOCKER_HUB else f"{host}/{repository}"


def python_image_ref(settings: Settings, platform: Platform) -> str:
    """The Python image of one platform: the setting itself for amd64, `<tag>-arm64` for arm64."""
    return platform.ref(settings.python_image) if not platform.is_default else settings.python_image


CACHE_TAG_PREFIX = "inputs-"
CACHE_TAG_HEX = 32  # 128 bits of the sha256: collisions are not a concern, and the tag stays readable


def cache_tag(input_hash: str) -> str:
    """`sha256:<64 hex>` -> `inputs-<first 32 hex>`: a valid tag (at most 128 characters, no colon)."""
    algorithm, _, hexdigest = input_hash.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise ValueError(f"not a sha256 input hash: {input_hash!r}")
    return CACHE_TAG_PREFIX + hexdigest[:CACHE_TAG_HEX]


# The commit tag settings.git_revision gives (`git rev-parse --short=12`, longer when 12 is ambiguous).
REVISION_TAG = re.compile(r"[0-9a-f]{12,40}(-dirty)?")
CACHE_TAG = re.compile(re.escape(CACHE_TAG_PREFIX) + f"[0-9a-f]{{{CACHE_TAG_HEX}}}")
# A platform's variant: `<tag>-arm64` locally, `<version>-amd64` / `-arm64` as inv push names each list entry.
PLATFORM_SUFFIXES = tuple(f"-{platform.architecture}" for platform in KNOWN)


@dataclass(frozen=True)
class OwnTags:
    """The tags the factory gives the images of one repository (`namespace/ingestion-connector-<name>`) and
    version: the version, `latest`, commit tags, and, where `inv push` tagged it for a registry
    (`host/namespace/...`), `inputs-<hash>` too; each also with a platform's suffix. A tag anyone else
    chose (another name, another namespace, another version) is not among them."""

    repository: str
    version: str

    def owns(self, ref: str) -> bool:
        """Whether `repository:tag` (or a digest reference `repository@sha256:...`) is one of these."""
        if "@" in ref:
            return self._our_repository(ref.partition("@")[0])
        repository, tag = split_ref(ref)
        if not self._our_repository(repository):
            return False
        for suffix in ("", *PLATFORM_SUFFIXES):
            plain = tag.removesuffix(suffix) if suffix else tag
            if suffix and plain == tag:
                continue
            if plain in (self.version, "latest") or REVISION_TAG.fullmatch(plain) or CACHE_TAG.fullmatch(plain):
                return True
        return False

    def _our_repository(self, repository: str) -> bool:
        """This repository, or its copy for a registry (`host[:port]/` before it, as target_repository names it)."""
        host, _, rest = repository.partition("/")
        return repository == self.repository or (
            rest == self.repository and ("." in host or ":" in host or host == "localhost"))
