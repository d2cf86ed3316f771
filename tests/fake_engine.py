"""The unit tests' one engine: docker_engine.Engine over a dict of images, as strict as the Docker engine.

It refuses what the engine refuses (its image-delete rules, in moby's daemon/images/image_delete.go):
tagging or removing an image it does not have is ImageMissing; removing by ID an image referenced in more
than one repository, an image another image is built on, or one a container uses is EngineRefused; the last
tag of an image a container uses cannot be removed either. So a test that finds "nothing left behind" has
seen the engine's rules applied, not a fake that deletes anything.

Pulls, pushes, loads and smoke tests answer from what the test put in (`registry`, `push_streams`, ...),
and record what was asked of them.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ingestion_factory.engine import verify
from ingestion_factory.engine.docker_engine import ContainerFailed, EngineRefused, ImageMissing
from ingestion_factory.model.plan import LABEL_PLATFORM, ImageInfo


def image_id(seed: str) -> str:
    """A well-formed image ID made from a word (the same word, the same ID)."""
    return "sha256:" + seed.encode().hex().ljust(64, "0")[:64]


@dataclass
class Image:
    id: str
    labels: dict = field(default_factory=dict)
    size: int = 7
    parent: str = ""  # the image it was built on, as the engine's own parent link (none after BuildKit)
    architecture: str = "amd64"
    os: str = "linux"
    files: dict = field(default_factory=dict)  # path -> bytes, for read_files
    layers: list = field(default_factory=list)  # the root file system's diff IDs, oldest first
    history: list = field(default_factory=list)  # the engine's history entries, newest first
    created: str = ""


@dataclass
class FakeContainer:
    """What a started container (run_detached) is asked: its log stream, wait, stop, kill, remove."""

    name: str = "run-local-test"
    exit_code: int = 0
    interrupts: int = 0  # KeyboardInterrupts from the first waits
    output: tuple[bytes, ...] = ()
    calls: list = field(default_factory=list)
    id: str = "c0ffee"

    def wait(self):
        self.calls.append("wait")
        if self.interrupts:
            self.interrupts -= 1
            raise KeyboardInterrupt
        return {"StatusCode": self.exit_code}

    def stop(self, timeout):
        self.calls.append(f"stop {timeout}")
        self.wait()  # a second Ctrl-C lands while stopping

    def kill(self):
        self.calls.append("kill")

    def remove(self, force):
        self.calls.append("remove")


class FakeEngine:
    """docker_engine.Engine in memory. `add` puts an image in; the Engine methods behave as the engine's."""

    sdk = None  # no docker SDK behind it

    def __init__(self):
        self.by_id: dict[str, Image] = {}
        self.refs: dict[str, str] = {}  # "repo:tag" and "repo@sha256:..." -> image ID
        self.containers: list[str] = []  # the image ID of each container
        self.registry: dict[str, Image] = {}  # "repo@digest" -> what a pull of it brings
        self.pull_error: Exception | None = None
        self.push_streams: list = []  # one event list (or exception) per push
        self.pushed: list[tuple[str, dict | None]] = []  # (repo:tag, the credentials handed over) per push
        self.archive_images: list[Image] = []  # what a load finds in the archive streamed to it
        self.received = b""  # the last archive loaded
        self.saved: list[list[str]] = []
        self.registry_settings: dict | None = {"IndexConfigs": {}}
        self.smoke: Callable[[str, list[str] | None], verify.SmokeResult] | None = None
        self.run_outputs: dict[str, bytes | Exception] = {}  # image ref -> stdout of run_output (or its error)
        self.container: FakeContainer | None = None  # what run_detached starts
        self.log: list[str] = []  # every change and run, in order: "tag ref", "untag ref", "remove id", ...
        self.inspected: list[str] = []  # the references inspect was asked for (the listing is not)

    # --- building the state -----------------------------------------------------------------------

    def add(self, image_id: str, labels: dict | None = None, tags: Iterable[str] = (), *, size: int = 7,
            parent: str = "", architecture: str = "amd64", files: dict | None = None, layers: Iterable[str] = (),
            history: Iterable[dict] = (), created: str = "") -> str:
        self.by_id[image_id] = Image(image_id, dict(labels or {}), size, parent, architecture, files=dict(files or {}),
                                     layers=list(layers), history=list(history), created=created)
        for ref in tags:
            self.refs[ref] = image_id
        return image_id

    @classmethod
    def holding(cls, images: dict) -> FakeEngine:
        """An engine with these images: ref -> ImageInfo (its labels, size and architecture)."""
        engine = cls()
        for ref, info in images.items():
            engine.hold(ref, info)
        return engine

    def hold(self, ref: str, info: ImageInfo) -> None:
        """`ref` names the image `info` describes (its labels, size and architecture, "" for unknown)."""
        known = self.by_id.get(info.id)
        self.by_id[info.id] = Image(info.id, info.labels, info.size, known.parent if known else "", info.architecture,
                                    files=known.files if known else {})
        if ref != info.id:
            self.refs[ref] = info.id

    def run_container(self, image: str) -> None:
        """A container (stopped or running) that uses `image`."""
        self.containers.append(self._resolve(image))

    def tags_of(self, image: str) -> list[str]:
        found = self._resolve(image)
        return [ref for ref, target in self.refs.items() if target == found and "@" not in ref]

    @property
    def pulls(self) -> list[str]:
        """The `repo@digest` references pulled, in order."""
        return [entry.removeprefix("pull ") for entry in self.log if entry.startswith("pull ")]

    @property
    def tagged(self) -> list[str]:
        """The references `tag` set, in order."""
        return [entry.removeprefix("tag ") for entry in self.log if entry.startswith("tag ")]

    def has(self, ref: str) -> bool:
        try:
            self._resolve(ref)
        except ImageMissing:
            return False
        return True

    # --- Engine ------------------------------------------------------------------------------------

    def images(self) -> list[ImageInfo]:
        return [self._info(found, listed=True) for found in self.by_id.values()]

    def image_ids(self) -> set[str]:
        return set(self.by_id)

    def inspect(self, ref: str) -> ImageInfo | None:
        self.inspected.append(ref)
        try:
            return self._info(self.by_id[self._resolve(ref)])
        except ImageMissing:
            return None

    def inspect_raw(self, ref: str) -> dict:
        image = self.by_id[self._resolve(ref)]
        return {"Id": image.id, "Config": {"Labels": dict(image.labels)}, "Created": image.created,
                "Size": image.size, "Architecture": image.architecture, "Os": image.os,
                "RootFS": {"Type": "layers", "Layers": list(image.layers)}}

    def history(self, ref: str) -> list[dict]:
        return list(self.by_id[self._resolve(ref)].history)

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.refs[f"{repository}:{tag}"] = self._resolve(image)
        self.log.append(f"tag {repository}:{tag}")

    def untag(self, ref: str) -> None:
        self._delete(ref, prune=False)

    def remove(self, ref: str) -> None:
        self._delete(ref, prune=True)

    def images_in_use(self) -> set[str]:
        return set(self.containers)

    def pull(self, repository: str, digest: str, auth: dict | None) -> Iterator[dict]:
        ref = f"{repository}@{digest}"
        self.log.append(f"pull {ref}")
        if self.pull_error:
            raise self.pull_error
        if ref not in self.registry:
            raise EngineRefused(f"APIError: manifest for {ref} not found")
        served = self.registry[ref]
        self.by_id.setdefault(served.id, served)
        self.refs[ref] = served.id
        return iter([{"status": "Downloading", "id": "l1", "progressDetail": {"total": 10}}])

    def push(self, repository: str, tag: str, auth: dict | None) -> Iterator[dict]:
        self._resolve(f"{repository}:{tag}")  # the engine pushes only a tag it has
        self.log.append(f"push {repository}:{tag}")
        self.pushed.append((f"{repository}:{tag}", auth))
        result = self.push_streams.pop(0) if self.push_streams else []
        if isinstance(result, Exception):
            raise result
        return iter(result)

    def save(self, image_ids: list[str]) -> Iterator[bytes]:
        for found in image_ids:
            self._resolve(found)
        self.saved.append(list(image_ids))
        return iter([json.dumps({"names": image_ids}).encode()])

    def load(self, chunks: Iterable[bytes]) -> Iterator[dict]:
        """Reads the whole archive (refusing, as Docker does, one that does not end as a tar ends), then holds
        `archive_images`, untagged."""
        self.received = b"".join(chunks)
        try:
            with tarfile.open(fileobj=io.BytesIO(self.received), mode="r|") as tar:
                for _ in tar:
                    pass
                whole = not self.received[tar.offset:tar.offset + 2 * tarfile.BLOCKSIZE].strip(b"\0")
        except tarfile.TarError:
            whole = False
        if not whole:
            yield {"errorDetail": {"message": "archive/tar: invalid tar header"}}
            return
        for image in self.archive_images:
            self.by_id.setdefault(image.id, image)
            self.log.append(f"load {image.id}")
            yield {"stream": f"Loaded image ID: {image.id}\n"}

    def registry_config(self) -> dict | None:
        return self.registry_settings

    def smoke_test(self, image_id: str, command: list[str] | None = None, *,
                   timeout_s: float = verify.SMOKE_TIMEOUT_S) -> verify.SmokeResult:
        self._resolve(image_id)
        self.log.append(f"smoke {image_id}")
        if self.smoke is not None:
            return self.smoke(image_id, command)
        return verify.SmokeResult(0, "ok", 0.1)

    def read_files(self, image: str, paths: list[str]) -> dict[str, bytes | None]:
        files = self.by_id[self._resolve(image)].files
        return {path: files.get(path) for path in paths}

    def run_output(self, image: str, command: list[str]) -> bytes:
        self._resolve(image)
        self.log.append(f"run {image}")
        outcome = self.run_outputs.get(image, ContainerFailed("ContainerError: the test set no output"))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def run_detached(self, image: str, command: list[str], *, environment: dict, mounts: list, name: str,
                     labels: dict) -> FakeContainer:
        self.run_container(image)
        self.started = dict(image=image, command=command, environment=environment, mounts=mounts, name=name,
                            labels=labels, detach=True, network_mode="host")
        self.container = self.container or FakeContainer()
        return self.container

    def follow_logs(self, container: FakeContainer) -> Iterator[bytes]:
        return iter(container.output)

    # --- the engine's rules -------------------------------------------------------------------------

    def _resolve(self, ref: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        if ref in self.by_id:
            return ref
        # A short ID, as the engine takes it (at least the hex's first few characters).
        matches = [known for known in self.by_id if len(ref.removeprefix("sha256:")) >= 4
                   and known.removeprefix("sha256:").startswith(ref.removeprefix("sha256:"))]
        if len(matches) == 1:
            return matches[0]
        raise ImageMissing(f"no such image: {ref}")

    def _refs_of(self, found: str) -> list[str]:
        return [ref for ref, target in self.refs.items() if target == found]

    def _children(self, found: str) -> list[str]:
        return [other.id for other in self.by_id.values() if other.parent == found]

    def _delete(self, ref: str, *, prune: bool) -> None:
        found = self._resolve(ref)
        refs = self._refs_of(found)
        if ref in self.refs:  # a name: that reference goes, the image only with its last one
            if _single_reference(refs) and found in self.containers:
                raise EngineRefused(f"APIError: 409 Client Error: Conflict (conflict: unable to remove repository "
                                    f"reference \"{ref}\" (must force) - container is using its referenced image "
                                    f"{found[7:19]})")
            del self.refs[ref]
            self.log.append(f"untag {ref}")
            if "@" not in ref:  # its repository's digest references go with its last tag there
                repository = ref.rpartition(":")[0]
                if not any(other.rpartition(":")[0] == repository for other in self._refs_of(found) if "@" not in other):
                    for digest_ref in [r for r in self._refs_of(found) if r.partition("@")[0] == repository]:
                        del self.refs[digest_ref]
            if self._refs_of(found) or self._children(found) or found in self.containers:
                return  # still named, or still needed: the engine leaves it, quietly
        else:  # an ID: the image goes, with its references when they are all in one repository
            if refs and not _single_reference(refs):
                raise EngineRefused(f"APIError: 409 Client Error: Conflict (conflict: unable to delete {found[7:19]} "
                                    "(must be forced) - image is referenced in multiple repositories)")
            if self._children(found):
                raise EngineRefused(f"APIError: 409 Client Error: Conflict (conflict: unable to delete {found[7:19]} "
                                    "(cannot be forced) - image has dependent child images)")
            if found in self.containers:
                raise EngineRefused(f"APIError: 409 Client Error: Conflict (conflict: unable to delete {found[7:19]} "
                                    "(must be forced) - image is being used by a container)")
            for name in refs:
                del self.refs[name]
                self.log.append(f"untag {name}")
        parent = self.by_id.pop(found).parent
        self.log.append(f"remove {found}")
        if prune and parent in self.by_id and not self._refs_of(parent) and not self._children(parent) \
                and parent not in self.containers:
            self._delete(parent, prune=True)

    def _info(self, found: Image, *, listed: bool = False) -> ImageInfo:
        refs = self._refs_of(found.id)
        # The listing has no architecture: the platform label stands in for it, as in DockerEngine.images().
        architecture = found.labels.get(LABEL_PLATFORM, "").partition("/")[2] if listed else found.architecture
        return ImageInfo(found.id, dict(found.labels), found.size, tuple(r for r in refs if "@" not in r),
                         architecture, "" if listed else found.os, tuple(r for r in refs if "@" in r))


def _single_reference(refs: list[str]) -> bool:
    """moby's isSingleReference: one tag at most, and digest references only in that tag's repository."""
    tags = [ref for ref in refs if "@" not in ref]
    digest_repositories = {ref.partition("@")[0] for ref in refs if "@" in ref}
    if len(tags) > 1:
        return False
    if not tags:
        return len(digest_repositories) == 1
    return digest_repositories <= {tags[0].rpartition(":")[0]}


def failing_run(stderr: bytes) -> ContainerFailed:
    """What run_output raises for a command that exits non-zero."""
    return ContainerFailed("ContainerError: exited 1", stderr)


# --- an engine holding a catalog's images ---------------------------------------------------------------

PYTHON_ID = "sha256:" + "1" * 64


def built_engine(settings, catalog, names, *, stale: tuple[str, ...] = ()) -> FakeEngine:
    """An engine holding the Python image and `names` (with their ancestors) built from the current inputs,
    each under its version tag and `latest`; the images in `stale` carry inputs of an older build."""
    from ingestion_factory.model.graph import parents_first
    from ingestion_factory.model.plan import LABEL_INPUTS, LABEL_PARENT, image_ref, input_hash

    engine = FakeEngine()
    engine.add(PYTHON_ID, {}, [settings.python_image])
    ids = {}
    for name in parents_first(catalog.parents, names):
        spec = catalog[name]
        parent_id = PYTHON_ID if spec.parent is None else ids[spec.parent]
        ids[name] = f"sha256:{name.encode().hex():0>64}"[:71]
        inputs = "sha256:" + "0" * 64 if name in stale else input_hash(spec, parent_id, settings)
        labels = {LABEL_INPUTS: inputs, LABEL_PARENT: parent_id, LABEL_PLATFORM: "linux/amd64",
                  "io.ingestion-factory.name": name}
        ref = image_ref(spec, settings)
        engine.add(ids[name], labels, [ref, f"{ref.rpartition(':')[0]}:latest"])
    return engine
