"""A fake docker SDK client: what the factory's engine-facing code calls of it, answered from a dict of images.

Wrapped in the real DockerImageStore (and so in ImageSnapshot), it lets a test run the task functions that
tasks.py calls with no engine at all: `commands.build(..., engine=fake_engine(...))`.
"""

from __future__ import annotations

import json

from ingestion_factory.engine.daemon import DockerImageStore
from ingestion_factory.model.graph import parents_first
from ingestion_factory.model.plan import LABEL_INPUTS, LABEL_PARENT, LABEL_PLATFORM, image_ref, input_hash

PYTHON_ID = "sha256:" + "1" * 64


def engine_attrs(image_id: str, labels: dict, tags, architecture: str = "amd64") -> dict:
    """What `docker image inspect` says of an image."""
    return {"Id": image_id, "Config": {"Labels": labels}, "Size": 7, "RepoTags": list(tags),
            "Architecture": architecture}


class FakeDockerApi:
    """`images` holds ref -> inspect attrs. The high- and low-level clients are the same object, as far as
    the calls made of them go (`api.api.images()`, `api.containers.run()`)."""

    def __init__(self, images: dict | None = None, *, inventory: dict | None = None):
        self.images_by_ref = dict(images or {})
        self.inventory = inventory  # what the catalog's probe prints, for `inv catalog`
        self.inspected: list[str] = []
        self.tagged: list[str] = []
        self.probed: list[str] = []
        self.api = self
        self.containers = self

    # low-level client
    def images(self, **_):
        listed = {attrs["Id"]: attrs for attrs in self.images_by_ref.values()}
        return [{"Id": attrs["Id"], "RepoTags": attrs.get("RepoTags") or ["<none>:<none>"], "Size": attrs["Size"],
                 "Labels": attrs["Config"].get("Labels")} for attrs in listed.values()]

    def inspect_image(self, ref):
        from docker.errors import ImageNotFound

        self.inspected.append(ref)
        if ref not in self.images_by_ref:
            by_id = [attrs for attrs in self.images_by_ref.values() if attrs["Id"] == ref]
            if not by_id:
                raise ImageNotFound(f"no such image: {ref}")
            return by_id[0]
        return self.images_by_ref[ref]

    def tag(self, image_id, repository, tag):
        self.tagged.append(f"{repository}:{tag}")
        return True

    def remove_image(self, ref, **_):
        pass

    # `docker save` through the SDK's connection (bundle.save_stream)
    def _url(self, path):
        return path

    def _get(self, url, params=None, stream=False):
        return params

    def _stream_raw_result(self, response, chunk_size, decode):
        return iter([json.dumps(response).encode()])

    # high-level client: containers.run, for the catalog's probe
    def run(self, image, command, **_):
        from docker.errors import ImageNotFound

        self.probed.append(image)
        if self.inventory is None:
            raise ImageNotFound(image)
        return json.dumps(self.inventory).encode()


def fake_engine(api: FakeDockerApi) -> tuple[FakeDockerApi, DockerImageStore]:
    """The (API client, image store) pair the task functions take as `engine`."""
    return api, DockerImageStore(api)


def built_images(settings, catalog, names, *, stale: tuple[str, ...] = ()) -> dict:
    """ref -> inspect attrs of an engine holding the Python image and `names` (with their ancestors) built from
    the current inputs; the images in `stale` carry inputs of an older build."""
    images = {settings.python_image: engine_attrs(PYTHON_ID, {}, [settings.python_image])}
    ids = {}
    for name in parents_first(catalog.parents, names):
        spec = catalog[name]
        parent_id = PYTHON_ID if spec.parent is None else ids[spec.parent]
        ids[name] = f"sha256:{name.encode().hex():0>64}"[:71]
        inputs = "sha256:" + "0" * 64 if name in stale else input_hash(spec, parent_id, settings)
        labels = {LABEL_INPUTS: inputs, LABEL_PARENT: parent_id, LABEL_PLATFORM: "linux/amd64",
                  "io.ingestion-factory.name": name}
        ref = image_ref(spec, settings)
        repository = ref.rpartition(":")[0]
        images[ref] = engine_attrs(ids[name], labels, [ref, f"{repository}:latest"])
    return images


class FixedImageStore:
    """An image store that only answers `inspect` (ref -> ImageInfo, or None), and has no engine behind it."""
    api = None

    def __init__(self, images):
        self.images = images

    def inspect(self, ref):
        return self.images.get(ref)
