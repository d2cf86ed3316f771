"""The bundle's format, decided without the engine: what bundle.json says and which names it may use.

A bundle is a plain tar with these members, in this order:

- `bundle.json`: the format, and per image its name, repository, ID, tags, input hash, framework version,
  parent ID, and the lock digest and SBOM path when the image carries them; plus the size and sha256
  of the second member;
- `images.tar`: one `docker save` of every image at once (shared layers stored once), saved by image
  ID so that loading it creates no tag;
- `trust.json`, when the bundle is signed: its signature and the images' attestations (workflows/trust_bundle.py).

The checksum only proves the copy is whole: whoever writes a bundle also writes its bundle.json. So
the names a bundle may tag are checked too (check_targets: this factory's
`namespace/ingestion-connector-<name>`, Docker tag syntax).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from ..documents import DocumentError, load_json
from ..errors import ConfigError
from ..settings import Settings
from . import catalog as catalog_mod
from .plan import LABEL_FRAMEWORK, LABEL_FRAMEWORK_VERSION, LABEL_INPUTS, LABEL_LOCK, LABEL_PARENT, LABEL_SBOM, PlanItem

BUNDLE_FORMAT = "ingestion-factory-bundle/1"
MANIFEST_MEMBER = "bundle.json"
IMAGES_MEMBER = "images.tar"
TRUST_MEMBER = "trust.json"  # the bundle's last member: its signature and the images' attestations
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# Docker's grammar: a tag, and one path component of a repository name.
TAG_SYNTAX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NAME_SYNTAX = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


class BundleRefused(ConfigError):
    """The archive is truncated, altered or not a bundle: nothing is tagged (exit 2: bad input)."""


@dataclass(frozen=True)
class BundledImage:
    name: str
    repository: str  # [registry/]namespace/ingestion-connector-<name>, as it was built
    image_id: str
    tags: tuple[str, ...]
    input_hash: str
    framework: str
    framework_version: str
    parent: str | None  # catalog key of the image it is built FROM (None: the Python image)
    parent_id: str
    lock_digest: str = ""
    sbom: str = ""

    @property
    def refs(self) -> list[str]:
        return [f"{self.repository}:{tag}" for tag in self.tags]


@dataclass(frozen=True)
class BundleManifest:
    images: tuple[BundledImage, ...]
    archive_size: int
    archive_sha256: str
    created: str = ""
    format: str = BUNDLE_FORMAT

    def to_json(self) -> str:
        document = asdict(self)
        document["images"] = [asdict(image) for image in self.images]
        return json.dumps(document, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> BundleManifest:
        """Parse and validate bundle.json; anything unexpected is BundleRefused."""
        try:
            document = load_json(text, what=f"its {MANIFEST_MEMBER}", limit=MAX_MANIFEST_BYTES)
        except DocumentError as exc:  # too large, nested too deep, or not JSON: one line saying which
            raise BundleRefused(str(exc)) from None
        try:
            if document.get("format") != BUNDLE_FORMAT:
                raise BundleRefused(f"not a bundle of this tool: format {document.get('format')!r}, "
                                    f"expected {BUNDLE_FORMAT!r}")
            images = tuple(BundledImage(**{**image, "tags": _tags(image["tags"])}) for image in document["images"])
            manifest = cls(images=images, archive_size=int(document["archive_size"]),
                           archive_sha256=str(document["archive_sha256"]), created=str(document.get("created", "")))
        except BundleRefused:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleRefused(f"its {MANIFEST_MEMBER} is not a valid manifest ({type(exc).__name__}: {exc})") from None
        problems = [image.name for image in images if not is_sha256(image.image_id) or not image.tags]
        if not images or problems or not is_sha256(manifest.archive_sha256):
            raise BundleRefused(f"its {MANIFEST_MEMBER} lacks image IDs, tags or the archive checksum"
                                + (f" ({', '.join(problems)})" if problems else ""))
        for image in images:
            if not isinstance(image.name, str) or not NAME_SYNTAX.fullmatch(image.name):
                raise BundleRefused(f"its {MANIFEST_MEMBER} names an image {image.name!r}, which is no connector name")
            if not isinstance(image.repository, str):
                raise BundleRefused(f"its {MANIFEST_MEMBER} gives {image.name} no repository name")
        return manifest


def _tags(value: object) -> tuple[str, ...]:
    """The manifest's tags: a list of Docker tags (a string here would be read as its characters)."""
    if not isinstance(value, list):
        raise BundleRefused(f"its {MANIFEST_MEMBER} gives tags as {type(value).__name__}, not a list")
    bad = [tag for tag in value if not isinstance(tag, str) or not TAG_SYNTAX.fullmatch(tag)]
    if bad:
        raise BundleRefused(f"its {MANIFEST_MEMBER} has a tag that is no Docker tag: {bad[0]!r}")
    return tuple(value)


def check_targets(manifest: BundleManifest, settings: Settings) -> None:
    """Every image goes to this factory's repository for its name; any other name is refused (exit 2).

    bundle.json is written by whoever wrote the bundle, so its repositories are a request, not a fact:
    unchecked, a bundle could retag any local image or, with --push, write any repository on the mirror.
    """
    for image in manifest.images:
        expected = settings.repository(catalog_mod.IMAGE_PREFIX + image.name)
        if image.repository != expected:
            raise BundleRefused(f"the bundle's {image.name} is for repository {image.repository!r}; this factory "
                                f"tags it only as {expected!r}; nothing was loaded",
                                "if the bundle comes from a factory with another namespace you trust, "
                                "give it with --namespace")


def is_sha256(value: str) -> bool:
    algorithm, _, hexdigest = str(value).partition(":")
    return algorithm == "sha256" and len(hexdigest) == 64 and all(c in "0123456789abcdef" for c in hexdigest)


def bundled_image(item: PlanItem, repository: str) -> BundledImage:
    """A manifest entry from an up-to-date plan item (its labels are what the build wrote)."""
    assert item.current is not None  # require_verified let only current images through
    labels = item.current.labels
    return BundledImage(
        name=item.name, repository=repository, image_id=item.current.id, tags=tuple(item.tags),
        input_hash=labels.get(LABEL_INPUTS, ""), framework=labels.get(LABEL_FRAMEWORK, item.spec.framework.name),
        framework_version=labels.get(LABEL_FRAMEWORK_VERSION, item.spec.framework.version),
        parent=item.spec.parent, parent_id=labels.get(LABEL_PARENT, ""),
        lock_digest=labels.get(LABEL_LOCK, ""), sbom=labels.get(LABEL_SBOM, ""),
    )
