"""The one seam between the workflows and the Docker engine.

`Engine` lists exactly what the workflows ask of an engine; `DockerEngine` does it through the docker SDK
(its low-level client, and the one private call `docker save` of many images needs). The SDK's errors stop
here: a missing image is ImageMissing, anything else the engine or its connection refuses is EngineRefused,
so no workflow imports docker.errors. The unit tests' one fake of this interface is tests/fake_engine.py.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Protocol, TypeVar

from ..errors import DockerUnavailable
from ..model.plan import LABEL_PLATFORM, ImageInfo
from . import verify
from .verify import Container, DockerClient

# The engine's answers as the SDK decodes them (JSON objects); the SDK ships no types to be more precise with.
JSON = dict[str, Any]
T = TypeVar("T")

NO_TAG = "<none>:<none>"
SAVE_CHUNK = 1024 * 1024
RUN_OUTPUT_TIMEOUT_S = 600  # a command run for its output (the catalog's probe, a version check) that hangs


class EngineError(Exception):
    """The engine did not do what was asked; `message` is shown as the SDK's error was ("APIError: ...")."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ImageMissing(EngineError):
    """No image answers to the reference."""


class EngineRefused(EngineError):
    """The engine refused (a conflict, a denied pull) or could not be reached."""


def describe(exc: BaseException) -> str:
    """An error as the workflows show it: the engine's own words, or `Type: text` for anything else."""
    return exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"


class Engine(Protocol):
    """What the workflows do with an engine; references are `repo:tag`, `repo@sha256:...` or an image ID."""

    def images(self) -> list[ImageInfo]:
        """Every listed image (one request), tags without `<none>`; architecture from the platform label."""

    def image_ids(self) -> set[str]:
        """The ID of every image, untagged and intermediate ones included."""

    def inspect(self, ref: str) -> ImageInfo | None: ...

    def inspect_raw(self, ref: str) -> JSON:
        """The engine's whole answer (RootFS, Config, Created, ...); ImageMissing if there is none."""

    def history(self, ref: str) -> list[JSON]:
        """The image's history entries, newest first, as the engine keeps them; ImageMissing if there is none."""

    def tag(self, image: str, repository: str, tag: str) -> None:
        """Point `repository:tag` at the image (moving it from any other); ImageMissing if there is none."""

    def untag(self, ref: str) -> None:
        """Drop one reference (the image goes with its last one, its parents stay); the engine's refusals apply."""

    def remove(self, ref: str) -> None:
        """Delete an image (and its untagged parents); refused while tagged elsewhere, a parent, or in use."""

    def images_in_use(self) -> set[str]:
        """The image IDs of every container, running or not."""

    def pull(self, repository: str, digest: str, auth: JSON | None) -> Iterator[JSON]:
        """Pull by digest; the engine's progress events."""

    def push(self, repository: str, tag: str, auth: JSON | None) -> Iterator[JSON]: ...

    def save(self, image_ids: list[str]) -> Iterator[bytes]:
        """`docker save` of several images in one archive."""

    def load(self, chunks: Iterable[bytes]) -> Iterator[JSON]:
        """`docker load` of an archive; the engine's events."""

    def registry_config(self) -> JSON | None:
        """The engine's registry settings (insecure registries, mirrors)."""

    def smoke_test(self, image_id: str, command: list[str] | None = None, *,
                   timeout_s: float = verify.SMOKE_TIMEOUT_S) -> verify.SmokeResult: ...

    def read_files(self, image: str, paths: list[str]) -> dict[str, bytes | None]: ...

    def run_output(self, image: str, command: list[str]) -> bytes:
        """Run a command without network in the image and return its stdout; ContainerFailed if it fails."""


class ContainerFailed(EngineError):
    """A command run in an image exited non-zero; `stderr` is what it said."""

    def __init__(self, message: str, stderr: bytes = b""):
        super().__init__(message)
        self.stderr = stderr


@contextlib.contextmanager
def _translated(ref: str = "") -> Iterator[None]:
    """The SDK's errors as the seam's own."""
    from docker.errors import ContainerError, DockerException, NotFound  # loads with the engine, not at start-up
    from requests.exceptions import RequestException

    try:
        yield
    except NotFound as exc:
        raise ImageMissing(f"{type(exc).__name__}: {exc}" if not ref else f"no such image: {ref}") from exc
    except ContainerError as exc:
        raise ContainerFailed(f"{type(exc).__name__}: {exc}", exc.stderr or b"") from exc
    except (DockerException, RequestException) as exc:
        raise EngineRefused(f"{type(exc).__name__}: {exc}") from exc


def _each(events: Iterable[T], ref: str = "") -> Iterator[T]:
    """A stream whose errors while it is read are translated too."""
    with _translated(ref):
        yield from events


@contextlib.contextmanager
def spool_save(engine: Engine, image_ids: list[str], directory: str | None = None,
               advance: Callable[[int], object] | None = None) -> Iterator[IO[bytes]]:
    """One `docker save` of the images in an unnamed temporary file (in `directory`, else the system's), rewound;
    `advance` is told the bytes of each chunk written.

    model/image_diff.py reads a save by seeking: its manifest.json, which names the layers, may come last. The
    file is gone when the block ends, or the process does.
    """
    with tempfile.TemporaryFile(dir=directory) as spool:
        for chunk in engine.save(image_ids):
            spool.write(chunk)
            if advance is not None:
                advance(len(chunk))
        spool.seek(0)
        yield spool


def info_from(attrs: JSON) -> ImageInfo:
    """ImageInfo from `docker image inspect`."""
    return ImageInfo(id=attrs["Id"], labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
                     size=int(attrs.get("Size") or 0),
                     tags=tuple(t for t in attrs.get("RepoTags") or () if t != NO_TAG),
                     architecture=str(attrs.get("Architecture") or ""), os=str(attrs.get("Os") or ""),
                     digests=tuple(attrs.get("RepoDigests") or ()))


NO_DAEMON_HINT = (
    "start the engine (`sudo systemctl start docker`, or `sudo dockerd &` on a machine without systemd) "
    "or point DOCKER_HOST at one"
)


@functools.lru_cache(maxsize=1)
def client() -> DockerClient:
    """A docker SDK client that has answered a ping, or DockerUnavailable."""
    import docker
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    try:
        api = docker.from_env(timeout=int(os.environ.get("FACTORY_DOCKER_TIMEOUT", "600")))
        api.ping()
    except (DockerException, RequestException) as exc:  # a socket nobody listens on refuses in requests' terms
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(f"cannot reach the Docker daemon at {where} ({short(exc)})", NO_DAEMON_HINT) from None
    return api


def short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def read_files(api: DockerClient, image: str, paths: list[str]) -> dict[str, bytes | None]:
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


class DockerEngine:
    """Engine over a docker SDK client (the local engine's, by default)."""

    def __init__(self, sdk: DockerClient | None = None) -> None:
        self.sdk: DockerClient = sdk if sdk is not None else client()
        self.low: Any = self.sdk.api  # docker.APIClient, untyped too

    def images(self) -> list[ImageInfo]:
        # The listing has no architecture: the platform label every build sets stands in for it.
        with _translated():
            listed = self.low.images()
        found = []
        for attrs in listed:
            labels = dict(attrs.get("Labels") or {})
            found.append(ImageInfo(id=attrs["Id"], labels=labels, size=int(attrs.get("Size") or 0),
                                   tags=tuple(t for t in attrs.get("RepoTags") or () if t != NO_TAG),
                                   architecture=labels.get(LABEL_PLATFORM, "").partition("/")[2],
                                   digests=tuple(d for d in attrs.get("RepoDigests") or () if d != "<none>@<none>")))
        return found

    def image_ids(self) -> set[str]:
        with _translated():
            return set(self.low.images(quiet=True, all=True))

    def inspect(self, ref: str) -> ImageInfo | None:
        try:
            with _translated(ref):
                return info_from(self.low.inspect_image(ref))
        except ImageMissing:
            return None

    def inspect_raw(self, ref: str) -> JSON:
        with _translated(ref):
            attrs: JSON = self.low.inspect_image(ref)
        return attrs

    def history(self, ref: str) -> list[JSON]:
        with _translated(ref):
            entries: list[JSON] = self.low.history(ref)
        return entries

    def tag(self, image: str, repository: str, tag: str) -> None:
        with _translated(image):
            self.low.tag(image, repository, tag, force=True)

    def untag(self, ref: str) -> None:
        with _translated(ref):
            self.low.remove_image(ref, noprune=True)

    def remove(self, ref: str) -> None:
        with _translated(ref):
            self.low.remove_image(ref)

    def images_in_use(self) -> set[str]:
        with _translated():
            return {container.get("ImageID") for container in self.low.containers(all=True)}

    def pull(self, repository: str, digest: str, auth: JSON | None) -> Iterator[JSON]:
        with _translated():
            events = self.low.pull(repository, tag=digest, stream=True, decode=True, auth_config=auth)
        return _each(events)

    def push(self, repository: str, tag: str, auth: JSON | None) -> Iterator[JSON]:
        with _translated():
            events = self.low.push(repository, tag, stream=True, decode=True, auth_config=auth)
        return _each(events)

    def save(self, image_ids: list[str]) -> Iterator[bytes]:
        # The SDK's get_image() takes one name; the engine's /images/get takes many, and stores each layer once.
        with _translated():
            response = self.low._get(self.low._url("/images/get"), params={"names": image_ids}, stream=True)
        return _each(self.low._stream_raw_result(response, SAVE_CHUNK, False))

    def load(self, chunks: Iterable[bytes]) -> Iterator[JSON]:
        with _translated():
            # Streamed as an iterator: the SDK would send a list as form fields, not as the archive's bytes.
            events = self.low.load_image(iter(chunks))
        return _each(events)

    def registry_config(self) -> JSON | None:
        with _translated():
            config: JSON | None = self.sdk.info().get("RegistryConfig")
        return config

    def smoke_test(self, image_id: str, command: list[str] | None = None, *,
                   timeout_s: float = verify.SMOKE_TIMEOUT_S) -> verify.SmokeResult:
        with _translated(image_id):
            return verify.smoke_test(self.sdk, image_id, command, timeout_s=timeout_s)

    def read_files(self, image: str, paths: list[str]) -> dict[str, bytes | None]:
        with _translated(image):
            return read_files(self.sdk, image, paths)

    def run_output(self, image: str, command: list[str]) -> bytes:
        # Read once the container has exited, not followed as it runs: a followed log stream can end before the
        # last chunk of a long output (seen with a 115 kB SBOM on dockerd 20.10).
        with _translated(image):
            container = self.sdk.containers.create(image, command, entrypoint=[], network_mode="none")
        try:
            with _translated(image):
                container.start()
                code = int(container.wait(timeout=RUN_OUTPUT_TIMEOUT_S).get("StatusCode", 1))
                output: bytes = container.logs(stdout=True, stderr=False)
                if code != 0:
                    stderr: bytes = container.logs(stdout=False, stderr=True)
                    raise ContainerFailed(f"ContainerError: {' '.join(command)[:80]} in {image} exited {code}",
                                          stderr)
            return output
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def run_detached(self, image: str, command: list[str], *, environment: dict[str, str], mounts: list[Any],
                     name: str, labels: dict[str, str]) -> Container:
        """A container started in the background on the host's network (`inv run-local`)."""
        with _translated(image):
            return self.sdk.containers.run(image, command, detach=True, network_mode="host", environment=environment,
                                           mounts=mounts, name=name, labels=labels)

    def follow_logs(self, container: Container) -> Iterator[bytes]:
        """A container's log stream, followed until it ends however long it stays quiet.

        The engine client gives up on a read after FACTORY_DOCKER_TIMEOUT (600 s) of silence, which ended
        the stream of a quiet workflow and lost its summary; this stream gets a client without a read timeout.
        """
        import docker  # heavy: only when a real container runs

        stream: Iterator[bytes] = docker.from_env(timeout=None).api.logs(container.id, stream=True, follow=True)
        return stream
