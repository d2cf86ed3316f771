"""The Docker engine, through the seam (docker_engine.Engine): plan against it, remove replaced images and tags."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..files import write_atomically
from ..model import lockfile
from ..model.catalog import Catalog
from ..model.names import OwnTags
from ..model.plan import ImageInfo, Plan, make_plan
from ..platforms import Platform
from ..settings import Settings, git_revision
from .docker_engine import DockerEngine, Engine, EngineRefused, ImageMissing, client, read_files, short
from .verify import DockerClient

__all__ = ["DockerEngine", "Engine", "client", "read_files"]  # their old home, still imported from here


def remove_tags_under(api: DockerClient, prefix: str, *, noprune: bool = False) -> None:
    """Untag every local image whose name starts with `prefix/` (deleting images left with no tag); `api` is
    a docker SDK client (the integration tests' clean-up)."""
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


def remove_replaced(engine: Engine, replaced: list[tuple[str, OwnTags]], pin_repository: str) -> Removal:
    """Delete the images a build replaced (children before parents), each given with the tags the factory
    gives its repository and version.

    An old image keeps the factory's own tags a new one did not take over (the commit tag of an older
    commit, a push's `inputs-<hash>` of older inputs, ...): those go, with its pin tags and the digest
    references of its pushes. It stays, untouched, when any other tag holds it (someone's own name, another
    namespace's) or a container uses it; the engine's own refusal is respected too.
    """
    removed = freed = 0
    kept: list[str] = []
    in_use = engine.images_in_use()
    for image_id, own in replaced:
        info = engine.inspect(image_id)
        if info is None:
            continue
        short_id = info.id[7:19]
        ours = [tag for tag in info.tags if tag.startswith(pin_repository + ":") or own.owns(tag)]
        others = [tag for tag in info.tags if tag not in ours]
        others += [ref for ref in info.digests if not own.owns(ref)]
        if info.id in in_use:
            kept.append(f"{short_id}: a container uses it")
            continue
        if others:
            kept.append(f"{short_id}: held by {', '.join(others)}")
            continue
        try:
            # The engine drops a repository's digest references with its last tag there, and the image
            # with its last reference: whatever is gone already is not missed.
            for ref in [*ours, *info.digests, info.id]:
                try:
                    engine.untag(ref)
                except ImageMissing:
                    pass
        except EngineRefused as exc:
            kept.append(f"{short_id}: the engine refused ({_short_refusal(exc)})")
            continue
        removed += 1
        freed += info.size
    return Removal(removed, freed, tuple(kept))


def _short_refusal(exc: EngineRefused) -> str:
    """The engine's words without the SDK's type name (as shown before the seam)."""
    return short(exc.__cause__) if exc.__cause__ is not None else short(exc)


class ImageSnapshot:
    """The engine's tagged images from one listing call, for planning a whole catalog (one request, not one
    per image); a reference the listing does not hold is inspected as usual.

    The listing has no architecture: the platform label every build sets stands in for it, so make_plan's
    wrong-architecture check works from the listing. An image built before that label stays "unknown" rather
    than costing an inspect per image on every no-op run; its inputs hash still ties it to its platform.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.by_ref: dict[str, ImageInfo] = {tag: info for info in engine.images() for tag in info.tags}

    def inspect(self, ref: str) -> ImageInfo | None:
        return self.by_ref.get(ref) or self.engine.inspect(ref)


def plan_for(settings: Settings, catalog: Catalog, targets: list[str], *, force: bool = False,
             platform: Platform | None = None, engine: Engine | None = None) -> tuple[Plan, Engine]:
    """The plan for these catalog keys, and the engine it was made against: `engine` when given (tests pass
    the fake one), else the local engine."""
    engine = engine if engine is not None else DockerEngine()
    extra = {"platform": platform} if platform is not None else {}
    memo = _load_digest_memo(settings)
    plan = make_plan(catalog, targets, ImageSnapshot(engine), settings, revision=git_revision(settings.root),
                     force=force, **extra)
    _save_digest_memo(settings, memo)
    return plan, engine


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
