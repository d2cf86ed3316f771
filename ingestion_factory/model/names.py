"""What images are called in registries: the host, the repository, the cache tag of an input hash."""

from __future__ import annotations

from ..platforms import Platform
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
