"""The Docker engine through the SDK: connect with a clear error, inspect images, plan against them, remove tags."""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache

from ..errors import DockerUnavailable
from ..files import write_atomically
from ..model import lockfile
from ..model.names import OwnTags
from ..model.plan import LABEL_PLATFORM, ImageInfo, make_plan
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


def read_files(api, image: str, paths: list[str]) -> dict[str, bytes | None]:
    """Files from an image, without running it (a created container, read through the engine's archive API)."""
    from docker.errors import NotFound  # the docker SDK loads when the engine is used, not at start-up

    container = api.containers.create(image, ["true"], network_mode="none")
    try:
        found: dict[str, bytes | None] = {}
        for path in paths:
            try:
                stream, _ = container.get_archive(path)
            except NotFound:  # the image has no such file
                found[path] = None
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
                member = archive.next()
                extracted = archive.extractfile(member) if member else None
                found[path] = extracted.read() if extracted else None
        return found
    finally:
        container.remove(force=True)


def remove_tags_under(api, prefix: str, *, noprune: bool = False) -> None:
    """Untag every local image whose name starts with `prefix/` (deleting images left with no tag)."""
    # The low-level list: one request, and no inspect per image that another process may remove meanwhile.
    for image in api.api.images():
        for tag in image.get("RepoTags") or []:
            if tag.startswith(prefix + "/"):
                try:
                    api.images.remove(tag, noprune=noprune)
                except Exception:  # in use by a running container, or already gone
                    pass


@dataclass(frozen=True)
class Removal:
    """What remove_replaced did: images deleted, bytes freed, and each image it left with the reason."""

    removed: int = 0
    freed: int = 0
    kept: tuple[str, ...] = ()  # "<short id>: <why>"


def remove_replaced(api, replaced: list[tuple[str, OwnTags]], pin_repository: str) -> Removal:
    """Delete the images a build replaced (children before parents), each given with the tags the factory
    gives its repository and version.

    An old image keeps the factory's own tags a new one did not take over (the commit tag of an older
    commit, a push's `inputs-<hash>` of older inputs, ...): those go, with its pin tags and the digest
    references of its pushes. It stays, untouched, when any other tag holds it (someone's own name, another
    namespace's) or a container uses it; the engine's own refusal is respected too.
    """
    from docker.errors import APIError, NotFound

    removed = freed = 0
    kept: list[str] = []
    in_use = {container.get("ImageID") for container in api.api.containers(all=True)}
    for image_id, own in replaced:
        try:
            attrs = api.api.inspect_image(image_id)
        except NotFound:
            continue
        short = attrs["Id"][7:19]
        tags = [tag for tag in attrs.get("RepoTags") or [] if tag != "<none>:<none>"]
        ours = [tag for tag in tags if tag.startswith(pin_repository + ":") or own.owns(tag)]
        others = [tag for tag in tags if tag not in ours]
        others += [ref for ref in attrs.get("RepoDigests") or [] if not own.owns(ref)]
        if attrs["Id"] in in_use:
            kept.append(f"{short}: a container uses it")
            continue
        if others:
            kept.append(f"{short}: held by {', '.join(others)}")
            continue
        try:
            # The engine drops a repository's digest references with its last tag there, and the image
            # with its last reference: whatever is gone already is not missed.
            for ref in [*ours, *(attrs.get("RepoDigests") or []), attrs["Id"]]:
                try:
                    api.images.remove(ref, noprune=True)
                except NotFound:
                    pass
        except APIError as exc:
            kept.append(f"{short}: the engine refused ({_short(exc)})")
            continue
        removed += 1
        freed += int(attrs.get("Size") or 0)
    return Removal(removed, freed, tuple(kept))


class ImageSnapshot:
    """The engine's tagged images from one listing call, for planning a whole catalog (one request, not one
    per image); a reference the listing does not hold is inspected as usual.

    The listing has no architecture: the platform label every build sets stands in for it, so make_plan's
    wrong-architecture check works from the listing. An image built before that label stays "unknown" rather
    than costing an inspect per image on every no-op run; its inputs hash still ties it to its platform.
    """

    def __init__(self, store: DockerImageStore):
        self.store = store
        self.by_ref: dict[str, ImageInfo] = {}
        for attrs in store.api.api.images():
            labels = dict(attrs.get("Labels") or {})
            info = ImageInfo(id=attrs["Id"], labels=labels, size=int(attrs.get("Size") or 0),
                             tags=tuple(t for t in attrs.get("RepoTags") or () if t != "<none>:<none>"),
                             architecture=labels.get(LABEL_PLATFORM, "").partition("/")[2])
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


def plan_for(settings: Settings, catalog, targets: list[str], *, force: bool = False, platform=None, engine=None):
    """The plan for these catalog keys, with the engine it was made against: `engine`, an (API client, image
    store) pair, when given (tests pass fakes), else the local engine."""
    api, store = engine if engine is not None else connect()
    extra = {"platform": platform} if platform is not None else {}
    memo = _load_digest_memo(settings)
    plan = make_plan(catalog, targets, ImageSnapshot(store), settings, revision=git_revision(settings.root),
                     force=force, **extra)
    _save_digest_memo(settings, memo)
    return plan, api, store


DIGEST_MEMO_FILE = "lock-digests.json"
DIGEST_MEMO_LIMIT = 4096  # entries kept: a few catalogs' worth of locks, a few hundred KiB at most


def _load_digest_memo(settings: Settings) -> int:
    """Fill lockfile's memo from the output directory (a bad or missing file is an empty memo); its size."""
    path = settings.output_path / "cache" / DIGEST_MEMO_FILE
    try:
        stored = json.loads(path.read_text()) if path.stat().st_size < 4 * 1024 * 1024 else {}
    except (OSError, ValueError):
        stored = {}
    if isinstance(stored, dict):
        lockfile.DIGEST_MEMO.update({k: v for k, v in stored.items()
                                     if isinstance(k, str) and isinstance(v, str) and v.startswith("sha256:")})
    return len(lockfile.DIGEST_MEMO)


def _save_digest_memo(settings: Settings, size_before: int) -> None:
    """Write the memo back when this run added to it (newest entries kept); a write that fails costs speed only."""
    if len(lockfile.DIGEST_MEMO) == size_before:
        return
    entries = list(lockfile.DIGEST_MEMO.items())[-DIGEST_MEMO_LIMIT:]
    try:
        write_atomically(settings.output_path / "cache" / DIGEST_MEMO_FILE, json.dumps(dict(entries)))
    except OSError:
        pass
