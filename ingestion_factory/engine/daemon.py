"""The Docker engine through the SDK: connect with a clear error, inspect images, plan against them, remove tags."""

from __future__ import annotations

import os
from functools import lru_cache

from ..errors import DockerUnavailable
from ..model.plan import ImageInfo, make_plan
from ..settings import Settings, git_revision

NO_DAEMON_HINT = (
    "start the engine (`sudo systemctl start docker`, or `sudo dockerd &` on a machine without systemd) "
    "or point DOCKER_HOST at one"
)


@lru_cache(maxsize=1)
def client():
    """A docker SDK client that has answered a ping, or DockerUnavailable."""
    import docker
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        api = docker.from_env(timeout=int(os.environ.get("FACTORY_DOCKER_TIMEOUT", "600")))
        api.ping()
    except (DockerException, RequestException) as exc:  # a socket nobody listens on refuses in requests' terms
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(f"cannot reach the Docker daemon at {where} ({_short(exc)})", NO_DAEMON_HINT) from None
    return api


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def remove_tags_under(api, prefix: str, *, noprune: bool = False) -> None:
    """Untag every local image whose name starts with `prefix/` (deleting images left with no tag)."""
    for image in api.images.list():
        for tag in image.tags:
            if tag.startswith(prefix + "/"):
                try:
                    api.images.remove(tag, noprune=noprune)
                except Exception:  # in use by a running container, or already gone
                    pass


def remove_replaced(api, image_ids: list[str], pin_repository: str) -> tuple[int, int]:
    """Delete images a build replaced (children before parents), with their pin tags.

    Only images left with no tag of anyone's are deleted: the engine refuses the others (another
    tag, a container, a child image), and that refusal is respected. Returns (count, bytes freed).
    """
    from docker.errors import APIError, NotFound

    removed = freed = 0
    for image_id in image_ids:
        try:
            attrs = api.api.inspect_image(image_id)
        except NotFound:
            continue
        pins = [tag for tag in attrs.get("RepoTags") or [] if tag.startswith(pin_repository + ":")]
        others = [tag for tag in attrs.get("RepoTags") or [] if tag not in pins]
        if others:
            continue
        try:
            for tag in pins:
                api.images.remove(tag, noprune=True)
            api.images.remove(image_id)
        except (APIError, NotFound):
            continue
        removed += 1
        freed += int(attrs.get("Size") or 0)
    return removed, freed


class ImageSnapshot:
    """The engine's tagged images from one listing call, for planning a whole catalog (one request, not one
    per image); a reference the listing does not hold is inspected as usual."""

    def __init__(self, store: "DockerImageStore"):
        self.store = store
        self.by_ref: dict[str, ImageInfo] = {}
        for attrs in store.api.api.images():
            info = ImageInfo(id=attrs["Id"], labels=dict(attrs.get("Labels") or {}), size=int(attrs.get("Size") or 0),
                             tags=tuple(t for t in attrs.get("RepoTags") or () if t != "<none>:<none>"))
            for tag in info.tags:
                self.by_ref[tag] = info

    def inspect(self, ref: str) -> ImageInfo | None:
        return self.by_ref.get(ref) or self.store.inspect(ref)


class DockerImageStore:
    """ImageStore backed by the local engine."""

    def __init__(self, api=None):
        self.api = api or client()

    def inspect(self, ref: str) -> ImageInfo | None:
        from docker.errors import ImageNotFound, NotFound

        try:
            attrs = self.api.api.inspect_image(ref)
        except (ImageNotFound, NotFound):
            return None
        return ImageInfo(id=attrs["Id"], labels=dict(attrs["Config"].get("Labels") or {}), size=int(attrs["Size"]),
                         tags=tuple(attrs.get("RepoTags") or ()), architecture=str(attrs.get("Architecture") or ""))


def connect():
    """The engine's API client and an image store over it."""
    api = client()
    return api, DockerImageStore(api)


def plan_for(settings: Settings, catalog, targets: list[str], *, force: bool = False, platform=None):
    """The plan for these catalog keys, with the engine it was made against."""
    api, store = connect()
    extra = {"platform": platform} if platform is not None else {}
    plan = make_plan(catalog, targets, ImageSnapshot(store), settings, revision=git_revision(settings.root),
                     force=force, **extra)
    return plan, api, store
