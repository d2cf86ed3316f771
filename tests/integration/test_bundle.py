"""inv bundle / inv unbundle on a real engine: a bundle made before emptying the engine restores it after.

The DataHub base and datahub-sqlite, built in a module-scoped scratch project. Every command runs with
the local engine's socket given explicitly in DOCKER_HOST.
"""

from __future__ import annotations

import io
import json
import tarfile

import docker.errors
import pytest
from scratch_project import empty_namespace
from testkit import DH_VERSION

from ingestion_factory.engine.docker_engine import DockerEngine
from ingestion_factory.model import bundle_format
from ingestion_factory.model.names import cache_tag
from ingestion_factory.workflows import bundle as bundle_mod
from ingestion_factory.workflows import bundle_archive

pytestmark = pytest.mark.registry

SQLITE = "datahub-sqlite"
FAMILY = ("base-datahub", SQLITE)
LOCAL_ENGINE = {"DOCKER_HOST": "unix:///var/run/docker.sock"}  # the local engine, named explicitly


def namespace_tags(api, namespace: str) -> list[str]:
    return [tag for image in api.images.list() for tag in image.tags if tag.startswith(namespace + "/")]


@pytest.fixture(scope="module")
def bundled(module_project, docker_api, tmp_path_factory):
    """datahub-sqlite and its base, built, then bundled; yields (project, bundle path, image IDs).

    Images of their own: the same inputs give the same image IDs (#31), so another scratch project's build
    would hold the very images this module removes to prove a refused bundle loaded nothing."""
    main = module_project.root / "runtime" / "main.py"
    main.write_text(main.read_text() + f"\n# test_bundle's own images: {module_project.namespace}\n")
    module_project.inv("build-connectors", "-c", SQLITE, env=LOCAL_ENGINE)
    ids = {name: docker_api.api.inspect_image(module_project.ref(name, DH_VERSION))["Id"] for name in FAMILY}
    path = tmp_path_factory.mktemp("bundle") / "datahub.bundle"
    done = module_project.inv("bundle", "-c", SQLITE, "-o", str(path), env=LOCAL_ENGINE)
    assert "Wrote" in done.stdout and "saving 2 image(s)" in done.stdout  # progress is shown
    yield module_project, path, ids
    empty_namespace(docker_api, module_project.namespace, [])


def test_the_manifest_describes_every_image_and_layers_are_stored_once(bundled, docker_api):
    project, path, ids = bundled
    manifest = bundle_archive.read_manifest(path)
    by_name = {image.name: image for image in manifest.images}
    assert set(by_name) == set(FAMILY)
    for name in FAMILY:
        labels = docker_api.api.inspect_image(ids[name])["Config"]["Labels"]
        image = by_name[name]
        assert image.image_id == ids[name]
        assert image.input_hash == labels["io.ingestion-factory.inputs"]
        assert image.framework_version == DH_VERSION
        assert image.tags[0] == DH_VERSION and "latest" in image.tags
        assert image.repository == f"{project.namespace}/ingestion-connector-{name}"
        # What issue 10's labels say about the image: the lock it installed and where its SBOM is.
        assert image.lock_digest == labels["io.ingestion-factory.lock-digest"] and image.lock_digest
        assert image.sbom == labels["io.ingestion-factory.sbom"] and image.sbom.endswith(".cdx.json")
    assert by_name[SQLITE].parent_id == ids["base-datahub"]
    sizes = sum(docker_api.api.inspect_image(ids[name])["Size"] for name in FAMILY)
    assert path.stat().st_size < sizes * 0.8  # the base's layers once, not once per image
    assert not [p for p in path.parent.iterdir() if p != path]  # no temp files left beside it


def test_unbundle_on_an_emptied_engine_restores_verifies_and_pushes_to_a_mirror(bundled, docker_api, registries):
    project, path, ids = bundled
    mirror = registries.open
    empty_namespace(docker_api, project.namespace, [mirror.host])
    assert not namespace_tags(docker_api, project.namespace)

    done = project.inv("unbundle", str(path), "--push", mirror.host, env=LOCAL_ENGINE)
    assert "smoke test" in done.stdout and "verified, tagged" in done.stdout
    manifest = {image.name: image for image in bundle_archive.read_manifest(path).images}
    for name in FAMILY:
        for tag in manifest[name].tags:
            assert docker_api.api.inspect_image(project.ref(name, tag))["Id"] == ids[name]
        repository = f"{project.namespace}/ingestion-connector-{name}"
        version = mirror.manifest_digest(repository, DH_VERSION)
        assert version is not None
        assert mirror.manifest_digest(repository, cache_tag(manifest[name].input_hash)) == version
    pushed = json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())
    assert {image["result"] for image in pushed["images"]} == {"pushed"}

    # The restored images are current: the build has nothing to do.
    assert "up to date; nothing to build" in project.inv("build-connectors", "-c", SQLITE).stdout


def _rewrite(path, target, *, manifest_edit=None, images_edit=None):
    """A copy of the bundle with bundle.json and/or images.tar changed."""
    with tarfile.open(path) as source, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            data = source.extractfile(member).read()
            if member.name == bundle_format.MANIFEST_MEMBER and manifest_edit:
                data = manifest_edit(data)
            if member.name == bundle_format.IMAGES_MEMBER and images_edit:
                data = images_edit(data)
            member.size = len(data)
            sink.addfile(member, io.BytesIO(data))


def test_truncated_or_altered_bundles_are_refused_and_tag_nothing(bundled, docker_api, registries, tmp_path):
    project, path, ids = bundled
    empty_namespace(docker_api, project.namespace, [registries.open.host])

    truncated = tmp_path / "truncated.bundle"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    flipped = tmp_path / "flipped.bundle"
    _rewrite(path, flipped, images_edit=lambda data: data[:1000] + bytes([data[1000] ^ 1]) + data[1001:])
    not_a_bundle = tmp_path / "not.bundle"
    not_a_bundle.write_text("hello")
    for bad, says in ((truncated, "truncated"), (flipped, "altered"), (not_a_bundle, "cannot be read as a bundle")):
        done = project.inv("unbundle", str(bad), check=False, env=LOCAL_ENGINE)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr
        assert bad is not_a_bundle or "nothing was loaded" in done.stderr
        assert not namespace_tags(docker_api, project.namespace)
    for image_id in ids.values():  # refused before loading: the engine never saw them
        assert not docker_api.images.list(filters={"reference": image_id})
        with pytest.raises(docker.errors.NotFound):
            docker_api.api.inspect_image(image_id)

    # A manifest edited to claim other inputs: the checksum holds, the loaded images do not match it.
    def claim_other_inputs(data):
        document = json.loads(data)
        document["images"][1]["input_hash"] = "sha256:" + "0" * 64
        return json.dumps(document).encode()

    lying = tmp_path / "lying.bundle"
    _rewrite(path, lying, manifest_edit=claim_other_inputs)
    done = project.inv("unbundle", str(lying), check=False, env=LOCAL_ENGINE)
    assert done.returncode == 1
    assert "nothing was tagged" in done.stderr and SQLITE in done.stderr
    assert not namespace_tags(docker_api, project.namespace)  # not even the base, which matched
    for image_id in ids.values():  # what it loaded is removed again
        with pytest.raises(docker.errors.NotFound):
            docker_api.api.inspect_image(image_id)


def test_bundling_stale_images_is_refused_and_leaves_the_output_alone(bundled, tmp_path):
    project, _, _ = bundled
    output = tmp_path / "kept.bundle"
    output.write_text("an older bundle")
    done = project.inv("bundle", "-c", "datahub-postgres", "-o", str(output), check=False)
    assert done.returncode == 1
    assert "refusing to bundle" in done.stderr and "inv build-connectors -c datahub-postgres" in done.stderr
    assert output.read_text() == "an older bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bundle"]


# --- DOCKER_HOST: the CLI and the SDK alike --------------------------------------------------------


class EngineProxy:
    """A unix socket that forwards to the local engine and records the HTTP requests that pass through it."""

    def __init__(self, path, engine="/var/run/docker.sock"):
        import socket
        import threading

        self.path, self.engine = str(path), engine
        self.requests: list[str] = []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen(64)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.engine)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, sink, record):
        import re

        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if record:
                    with self.lock:
                        self.requests += re.findall(rb"(?:GET|POST|HEAD|DELETE|PUT) (/\S*) HTTP/1\.1", data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(2)
                except OSError:
                    pass

    def seen(self, fragment: str) -> bool:
        with self.lock:
            return any(fragment.encode() in request for request in self.requests)

    def close(self):
        self.server.close()


def test_every_step_honours_docker_host(bundled, docker_api, tmp_path):
    """Build (the BuildKit CLI), smoke test, bundle and unbundle (the SDK), all through a DOCKER_HOST proxy."""
    import tempfile

    project, _, _ = bundled
    # A short path: unix socket paths are limited to about 100 characters.
    proxy = EngineProxy(tempfile.mkdtemp(prefix="dh-") + "/engine.sock")
    env = {"DOCKER_HOST": proxy.docker_host}
    try:
        project.inv("build-connectors", "-c", SQLITE, "--force", env=env)
        assert proxy.seen("/build") or proxy.seen("/grpc") or proxy.seen("/session"), proxy.requests[:20]  # the CLI
        assert proxy.seen("/containers/create")  # the smoke test, through the SDK
        output = tmp_path / "through-proxy.bundle"
        project.inv("bundle", "-c", SQLITE, "-o", str(output), env=env)
        assert proxy.seen("/images/get?names=")
        project.inv("unbundle", str(output), env=env)
        assert proxy.seen("/images/load")
    finally:
        proxy.close()
    gone = project.inv("list", "--json", check=False, env=env)  # nobody listens there any more
    assert gone.returncode == 3
    assert proxy.docker_host in gone.stderr


def _images_with_names(path, names: list[str]) -> bytes:
    """The bundle's images.tar, its manifest.json rewritten to name `names` (as `docker save NAME` would)."""
    with tarfile.open(path) as bundle:
        saved = bundle.extractfile(bundle_format.IMAGES_MEMBER).read()
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(saved)) as source, tarfile.open(fileobj=out, mode="w") as sink:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                document = json.loads(data)
                document[0]["RepoTags"] = names
                data = json.dumps(document).encode()
                member.size = len(data)
            sink.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def test_forged_bundles_exit_2_and_leave_every_tag_as_it_was(bundled, docker_api, registries, tmp_path):
    import hashlib

    from ingestion_factory.progress import Quiet

    project, path, ids = bundled
    empty_namespace(docker_api, project.namespace, [registries.open.host])
    python_image = docker_api.api.inspect_image("python:3.11-slim-bookworm")["Id"]
    victim = f"{project.namespace}/victim"
    docker_api.api.tag(python_image, victim, "keep")
    try:
        before = bundle_mod.tag_state(DockerEngine(docker_api))

        def edit_image(**changes):
            def edit(data):
                document = json.loads(data)
                document["images"][1].update(changes)
                return json.dumps(document).encode()
            return edit

        forged_images = _images_with_names(path, ["python:3.11-slim-bookworm", f"{victim}:keep",
                                                  f"{victim}:new"])

        def with_forged_images(data):
            document = json.loads(data)
            document["archive_size"] = len(forged_images)
            document["archive_sha256"] = "sha256:" + hashlib.sha256(forged_images).hexdigest()
            return json.dumps(document).encode()

        cases = {
            "retag python": (dict(manifest_edit=edit_image(repository="python", tags=["3.11-slim-bookworm"])),
                             "tags it only as"),
            "retag a local image": (dict(manifest_edit=edit_image(repository=victim, tags=["keep"])),
                                    "tags it only as"),
            "tags as a string": (dict(manifest_edit=edit_image(tags="latest")), "not a list"),
            "not a tag": (dict(manifest_edit=edit_image(tags=["ok", "../x"])), "no Docker tag"),
            "archive names local images": (dict(manifest_edit=with_forged_images,
                                                images_edit=lambda data: forged_images), "names images"),
        }
        for case, (edits, says) in cases.items():
            forged = tmp_path / f"{case.replace(' ', '-')}.bundle"
            _rewrite(path, forged, **edits)
            done = project.inv("unbundle", str(forged), check=False, env=LOCAL_ENGINE)
            assert done.returncode == 2, (case, done.stdout[-1000:], done.stderr)
            assert says in done.stderr, (case, done.stderr)
            assert bundle_mod.tag_state(DockerEngine(docker_api)) == before, case
            for image_id in ids.values():  # refused before loading
                assert not docker_api.images.list(filters={"reference": image_id}), case

        # Should such an archive reach the engine anyway, loading it applies none of its names.
        forged = tmp_path / "archive-names-local-images.bundle"
        with bundle_archive.open_bundle(forged) as opened:
            loaded = bundle_archive.load_images(DockerEngine(docker_api), opened, Quiet())
        assert set(loaded) == set(ids.values())
        assert bundle_mod.tag_state(DockerEngine(docker_api)) == before
    finally:
        docker_api.api.remove_image(f"{victim}:keep", noprune=True)
        empty_namespace(docker_api, project.namespace, [registries.open.host])
        for image_id in ids.values():
            try:
                docker_api.api.remove_image(image_id)
            except Exception:
                pass


def test_an_archive_refused_as_it_streams_into_the_engine_loads_nothing(bundled, docker_api, registries, tmp_path):
    """A member refused at the archive's very end, after every image's files went to the engine: the upload
    is aborted and the stream ends in a broken header, so the engine loads none of it."""
    import hashlib

    from ingestion_factory.progress import Quiet

    project, path, ids = bundled
    empty_namespace(docker_api, project.namespace, [registries.open.host])
    for image_id in ids.values():  # this module's images, loaded again by the tests before
        try:
            docker_api.api.remove_image(image_id)
        except Exception:
            pass
    with tarfile.open(path) as bundle:
        saved = bundle.extractfile(bundle_format.IMAGES_MEMBER).read()
    forged_images = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(saved)) as source, tarfile.open(fileobj=forged_images, mode="w") as sink:
        for member in source:
            sink.addfile(member, source.extractfile(member) if member.isfile() else None)
        fifo = tarfile.TarInfo("pipe")
        fifo.type = tarfile.FIFOTYPE
        sink.addfile(fifo)
    forged_images = forged_images.getvalue()

    def with_forged_images(data):
        document = json.loads(data)
        document["archive_size"] = len(forged_images)
        document["archive_sha256"] = "sha256:" + hashlib.sha256(forged_images).hexdigest()
        return json.dumps(document).encode()

    forged = tmp_path / "fifo.bundle"
    _rewrite(path, forged, manifest_edit=with_forged_images, images_edit=lambda data: forged_images)
    with bundle_archive.open_bundle(forged) as opened:
        with pytest.raises(bundle_format.BundleRefused, match="images.tar member 'pipe' is a FIFO"):
            bundle_archive.load_images(DockerEngine(docker_api), opened, Quiet())
    for image_id in ids.values():
        assert not docker_api.images.list(filters={"reference": image_id})
        with pytest.raises(docker.errors.NotFound):
            docker_api.api.inspect_image(image_id)
